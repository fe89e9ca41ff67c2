// What the browser scripts share: Debian's Chromium through playwright-core, axe-core, the provider's login.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
/** axe-core's browser build, injected into each page checked. */
export const AXE = require.resolve('axe-core/axe.min.js');

/** Chromium without downloads of its own: the network here is closed, and Chromium's background connections
 * (component updates, sync, QUIC probes) would only be refused. */
export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** A context that fails the run on a page error, and logs the console errors of its pages. */
export async function context(browser, name) {
  const ctx = await browser.newContext({ locale: 'it-IT', timezoneId: 'Europe/Rome', acceptDownloads: true });
  ctx.on('page', (page) => watch(page, name));
  return ctx;
}

export const pageErrors = [];

function watch(page, name) {
  page.on('pageerror', (error) => {
    pageErrors.push(`${name}: ${page.url()}: ${error.message}`);
    console.error(`[${name}] page error on ${page.url()}: ${error.message}`);
  });
  page.on('response', async (response) => {
    const url = new URL(response.url());
    if (response.status() < 400 || url.pathname === '/favicon.ico') return;
    const body = await response.text().catch(() => '');
    console.error(`[${name}] ${response.request().method()} ${url.pathname}${url.search} answered ${response.status()}: ${body.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 400)}`);
  });
  page.on('console', (msg) => {
    // axe's own injection, refused by the page's CSP before the fallback (see axe below), is not the page's.
    if (page.injectingAxe && /Content Security Policy/.test(msg.text())) return;
    // Failed loads are told by the response handler below, with their URL.
    if (/^Failed to load resource/.test(msg.text())) return;
    if (msg.type() === 'error') console.error(`[${name}] console error on ${page.url()}: ${msg.text()}`);
  });
}

/** axe-core on the page as it is now: 0 violations of WCAG 2.1 A and AA, or the assertion lists them.
 * The contexts enforce the console's Content-Security-Policy (its live updates must run under it), which refuses
 * the inline script of `addScriptTag`: then axe's source is evaluated through the DevTools protocol instead,
 * which CSP does not govern. */
export async function axe(page, what) {
  page.injectingAxe = true;
  await page.addScriptTag({ path: AXE }).catch(() => {});
  // eslint-disable-next-line no-undef
  if (!(await page.evaluate(() => typeof axe !== 'undefined'))) await page.evaluate(readFileSync(AXE, 'utf8'));
  page.injectingAxe = false;
  const result = await page.evaluate(() =>
    // eslint-disable-next-line no-undef
    axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } }),
  );
  const violations = result.violations.map(
    (v) =>
      `  ${v.id} (${v.impact}): ${v.help}\n${v.nodes
        .slice(0, 5)
        .map((n) => `    ${n.target.join(' ')}: ${n.failureSummary?.replace(/\n/g, ' ')}`)
        .join('\n')}`,
  );
  assert.equal(violations.length, 0, `axe on ${what} (${page.url()}): ${violations.length} violation(s)\n${violations.join('\n')}`);
  console.log(`ok axe: ${what}: 0 violations (${result.passes.length} rules passed)`);
}

/** The provider's login form (oidc.mjs), on whatever page the browser was sent to. */
export async function login(page, user) {
  await page.waitForSelector('form input[name="utente"]', { timeout: 15000 });
  await page.fill('input[name="utente"]', user);
  await page.fill('input[name="password"]', 'una-password-qualsiasi');
  await Promise.all([page.waitForNavigation({ timeout: 20000 }), page.click('button[type="submit"]')]);
}

/** Runs `body`, prints `ok NAME` or `FAIL NAME` and the error; returns whether it passed. */
export async function step(name, body) {
  try {
    await body();
    console.log(`ok ${name}`);
    return true;
  } catch (error) {
    console.log(`FAIL ${name}\n${error.stack ?? error}`);
    throw error;
  }
}
