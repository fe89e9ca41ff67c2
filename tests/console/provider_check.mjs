// The provider of oidc.mjs on its own, as the console will use it: a browser sent to the authorization endpoint
// (code flow, PKCE S256, scope `openid sede`) logs in through the form, comes back to the redirect URI with a
// code, and the code (with the verifier, client_secret_basic) buys an ID token that carries `sede` and
// `sola_lettura`. An authorization request without PKCE is refused.
//
//   ISSUER=http://127.0.0.1:N REDIRECT_URI=http://127.0.0.1:M/callback node provider_check.mjs
//
// It listens on the redirect URI's port itself (standing in for the console). Exits non-zero on failure.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import { context, launch, login, step } from './lib.mjs';

const issuer = process.env.ISSUER;
const redirectUri = process.env.REDIRECT_URI;
assert.ok(issuer && redirectUri, 'ISSUER and REDIRECT_URI are required');
const redirect = new URL(redirectUri);

const b64url = (buf) => Buffer.from(buf).toString('base64url');

// The stand-in for the console's callback: answers a small page with what it received.
const received = [];
const server = createServer((req, res) => {
  const url = new URL(req.url, redirectUri);
  if (url.pathname !== redirect.pathname) {
    res.writeHead(204).end();
    return;
  }
  received.push(url);
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
  res.end('<!DOCTYPE html><html lang="it"><head><title>callback</title></head><body><p id="ricevuto">ricevuto</p></body></html>');
});
await new Promise((resolve) => server.listen(Number(redirect.port), '127.0.0.1', resolve));

const discovery = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
let browser;
try {
  await step('discovery names the issuer, the code flow and the scope sede', async () => {
    assert.equal(discovery.issuer, issuer);
    assert.ok(discovery.response_types_supported.includes('code'), JSON.stringify(discovery.response_types_supported));
    assert.ok(discovery.scopes_supported.includes('sede'), JSON.stringify(discovery.scopes_supported));
    assert.ok(discovery.claims_supported.includes('sola_lettura'), JSON.stringify(discovery.claims_supported));
    assert.ok(discovery.code_challenge_methods_supported.includes('S256'));
  });

  browser = await launch();

  await step('an authorization request without PKCE is refused', async () => {
    const ctx = await context(browser, 'senza-pkce');
    const page = await ctx.newPage();
    const url = new URL(discovery.authorization_endpoint);
    url.search = new URLSearchParams({
      client_id: 'smart-task-console', response_type: 'code', scope: 'openid sede', redirect_uri: redirectUri,
      state: 'stato-senza-pkce',
    });
    await page.goto(url.href);
    // The provider redirects the error to the client.
    const last = received.at(-1);
    assert.ok(last, `no redirect to the client; the page says: ${await page.textContent('body')}`);
    assert.equal(last.searchParams.get('error'), 'invalid_request', last.href);
    assert.match(last.searchParams.get('error_description') ?? '', /PKCE/);
    await ctx.close();
  });

  for (const [user, sede, solaLettura] of [['op-anna', '7000', false], ['op-lettore', '7000', true], ['op-carla', '1300', false]]) {
    await step(`${user} logs in with PKCE and the ID token carries sede ${sede}, sola_lettura ${solaLettura}`, async () => {
      const ctx = await context(browser, user);
      const page = await ctx.newPage();
      const verifier = b64url(randomBytes(32));
      const challenge = b64url(createHash('sha256').update(verifier).digest());
      const state = b64url(randomBytes(12));
      const nonce = b64url(randomBytes(12));
      const url = new URL(discovery.authorization_endpoint);
      url.search = new URLSearchParams({
        client_id: 'smart-task-console', response_type: 'code', scope: 'openid sede', redirect_uri: redirectUri,
        state, nonce, code_challenge: challenge, code_challenge_method: 'S256',
      });
      await page.goto(url.href);
      await login(page, user);
      assert.equal(await page.textContent('#ricevuto'), 'ricevuto', `not back at the client: ${page.url()}`);
      const back = received.at(-1);
      assert.equal(back.searchParams.get('state'), state, back.href);
      assert.equal(back.searchParams.get('iss'), issuer, back.href);
      const code = back.searchParams.get('code');
      assert.ok(code, `no code: ${back.href}`);

      const token = await fetch(discovery.token_endpoint, {
        method: 'POST',
        headers: {
          authorization: `Basic ${Buffer.from('smart-task-console:segreto-di-prova').toString('base64')}`,
          'content-type': 'application/x-www-form-urlencoded',
        },
        body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier }),
      });
      const body = await token.json();
      assert.equal(token.status, 200, JSON.stringify(body));
      const [, payload] = body.id_token.split('.');
      const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
      assert.equal(claims.iss, issuer);
      assert.equal(claims.aud, 'smart-task-console');
      assert.equal(claims.sub, user);
      assert.equal(claims.nonce, nonce);
      assert.equal(claims.sede, sede, JSON.stringify(claims));
      assert.equal(claims.sola_lettura, solaLettura, JSON.stringify(claims));

      // The same code twice is refused (single use).
      const again = await fetch(discovery.token_endpoint, {
        method: 'POST',
        headers: {
          authorization: `Basic ${Buffer.from('smart-task-console:segreto-di-prova').toString('base64')}`,
          'content-type': 'application/x-www-form-urlencoded',
        },
        body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier }),
      });
      assert.equal(again.status, 400);
      await ctx.close();
    });
  }
  console.log('provider check: all passed');
} finally {
  await browser?.close();
  server.close();
}
