// A real, local OpenID provider for the console's browser tests (tests/console_browser.rs starts it):
// oidc-provider on 127.0.0.1, issuer http://127.0.0.1:PORT, one confidential client (the console), PKCE
// required, four operators. The scope `sede` carries the claims `sede` and `sola_lettura`, and they are put in
// the ID token itself (conformIdTokenClaims: false), where the console reads them.
//
//   node oidc.mjs --port N --redirect http://127.0.0.1:M/console/... [--post-logout URL]
//
// Prints `ready` on stdout once it listens; stops on SIGTERM (or SIGINT).
//
// The login is a minimal interaction of our own rather than oidc-provider's dev interactions (whose pages
// change between majors): a form at /interaction/UID with the fields `utente` and `password` (any password is
// accepted, an unknown user is not) and the button "Accedi"; the consent is given without a page, as a
// first-party identity provider does for its own console.

import { createServer } from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import { parseArgs } from 'node:util';

import { Provider } from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    redirect: { type: 'string', multiple: true },
    'post-logout': { type: 'string', multiple: true },
  },
});
if (!args.port || !args.redirect?.length) {
  console.error('usage: node oidc.mjs --port N --redirect URL [--redirect URL…] [--post-logout URL]');
  process.exit(2);
}
const port = Number(args.port);
const issuer = `http://127.0.0.1:${port}`;

/** The operators: `sub` is the user name typed in the login form. */
export const ACCOUNTS = {
  'op-anna': { sede: '7000', sola_lettura: false, name: 'Anna Operatrice' },
  'op-bruno': { sede: '7000', sola_lettura: false, name: 'Bruno Operatore' },
  'op-carla': { sede: '1300', sola_lettura: false, name: 'Carla Operatrice' },
  'op-lettore': { sede: '7000', sola_lettura: true, name: 'Lettore' },
};

// A signing key of this run only (RS256, the default alg of ID tokens).
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'prova-console', use: 'sig', alg: 'RS256' };

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'smart-task-console',
      client_secret: 'segreto-di-prova',
      redirect_uris: args.redirect,
      post_logout_redirect_uris: args['post-logout'] ?? [],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  // PKCE for every client, the confidential console included (oidc-provider's default asks it of public
  // clients only).
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'sede'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    sede: ['sede', 'sola_lettura'],
  },
  conformIdTokenClaims: false,
  async findAccount(ctx, id) {
    const account = ACCOUNTS[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, ...account };
      },
    };
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  features: { devInteractions: { enabled: false } },
  cookies: { keys: ['chiave-cookie-di-prova-1', 'chiave-cookie-di-prova-2'] },
  jwks: { keys: [jwk] },
  // Say why an interaction or a request failed (the tests print it).
  renderError(ctx, out, error) {
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html><html lang="it"><head><meta charset="utf-8"><title>Errore</title></head><body><main><h1>Errore del provider</h1><pre id="errore">${escape(JSON.stringify(out))}</pre></main></body></html>`;
    console.error(`oidc: error ${JSON.stringify(out)} ${error?.stack ?? ''}`);
  },
});
provider.on('server_error', (ctx, error) => console.error(`oidc: server_error ${error.stack}`));
provider.on('grant.error', (ctx, error) => console.error(`oidc: grant.error ${error.message} ${JSON.stringify(error.error_description ?? '')}`));
provider.on('authorization.error', (ctx, error) => console.error(`oidc: authorization.error ${error.message} ${error.error_description ?? ''}`));

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginPage(uid, params, error) {
  return `<!DOCTYPE html>
<html lang="it"><head><meta charset="utf-8"><title>Accesso operatore</title></head>
<body><main>
<h1>Accesso operatore</h1>
<p>Applicazione: ${escape(params.client_id)}</p>
${error ? `<p id="errore" role="alert">${escape(error)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}/login" autocomplete="off">
  <p><label for="utente">Utente</label> <input id="utente" name="utente" required autofocus></p>
  <p><label for="password">Password</label> <input id="password" name="password" type="password"></p>
  <p><button type="submit">Accedi</button></p>
</form>
</main></body></html>`;
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

/** The interaction routes; everything else is the provider's. */
async function interaction(req, res, path) {
  const [uid, action] = path.split('/');
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction uid mismatch');
  const { prompt, params } = details;
  if (prompt.name === 'login') {
    if (req.method === 'GET' && !action) return send(res, 200, loginPage(uid, params));
    if (req.method === 'POST' && action === 'login') {
      const form = await readForm(req);
      const user = (form.get('utente') ?? '').trim();
      if (!ACCOUNTS[user]) return send(res, 200, loginPage(uid, params, `Utente sconosciuto: ${user}`));
      return provider.interactionFinished(req, res, { login: { accountId: user } }, { mergeWithLastSubmission: false });
    }
  }
  if (prompt.name === 'consent') {
    const accountId = details.session.accountId;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    const consent = details.grantId ? {} : { grantId };
    return provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
  }
  send(res, 400, `<!DOCTYPE html><html lang="it"><head><meta charset="utf-8"><title>Errore</title></head><body><p>prompt inatteso: ${escape(prompt.name)}</p></body></html>`);
}

const callback = provider.callback();
const server = createServer((req, res) => {
  const url = new URL(req.url, issuer);
  if (url.pathname === '/favicon.ico') {
    res.writeHead(204).end();
    return;
  }
  if (url.pathname.startsWith('/interaction/')) {
    interaction(req, res, url.pathname.slice('/interaction/'.length)).catch((error) => {
      console.error(`oidc: interaction failed: ${error.stack}`);
      if (!res.headersSent) send(res, 500, `<!DOCTYPE html><html lang="it"><head><meta charset="utf-8"><title>Errore</title></head><body><pre>${escape(error.message)}</pre></body></html>`);
    });
    return;
  }
  callback(req, res);
});

server.listen(port, '127.0.0.1', () => {
  console.log('ready');
});

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
