// The operator console in a real browser (tests/console_browser.rs runs it against a daemon on SQLite and the
// provider of oidc.mjs). Exits non-zero on the first failure, printing it.
//
// Environment:
//   CONSOLE_URL            the console's root, e.g. http://127.0.0.1:PORT/console
//   SCREENSHOTS            directory for the screenshots (made if missing)
//   PROTOCOLLO_RINVIO      the referral of examples/requests/rdi-07 (sede 7000, with examples/allegati/diffida.pdf)
//   PROTOCOLLO_ALTRA_SEDE  a referral of sede 1300, which sede 7000 must not see
//   SOSPESE                how many requests of sede 7000 are parked after rule errors (all of one rule version)
//   CHROMIUM               the browser (default /usr/bin/chromium)
//
// Selectors follow the console's page contract (routes under CONSOLE_URL: /coda, /richieste/ID, /coda/sospese,
// /operazioni; ids #coda, #pausa, #stato-aggiornamenti, #spiegazione, #allegati, #storico, #presa-in-carico,
// form#prendi, form#commenta, form#chiudi, form#rimessa-in-blocco, form#conferma, #esito-azione).

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { axe, context, launch, login, pageErrors, step } from './lib.mjs';

const CONSOLE_URL = (process.env.CONSOLE_URL ?? '').replace(/\/$/, '');
const SCREENSHOTS = process.env.SCREENSHOTS ?? 'screenshots';
const RINVIO = process.env.PROTOCOLLO_RINVIO;
const ALTRA_SEDE = process.env.PROTOCOLLO_ALTRA_SEDE;
const SOSPESE = Number(process.env.SOSPESE ?? '0');
assert.ok(CONSOLE_URL && RINVIO && ALTRA_SEDE && SOSPESE > 0, 'CONSOLE_URL, PROTOCOLLO_RINVIO, PROTOCOLLO_ALTRA_SEDE and SOSPESE are required');
mkdirSync(SCREENSHOTS, { recursive: true });

/** How long a live update may take to reach another operator's open page. */
const LIVE_MS = 8000;

const shot = (page, name) => page.screenshot({ path: join(SCREENSHOTS, name), fullPage: true });

/** The queue's row of a request. */
const row = (page, protocollo) => page.locator(`#coda tr[data-protocollo="${protocollo}"]`);

/** Opens the console as `user`: the console sends the browser to the provider, the provider back. */
async function signIn(browser, user) {
  const ctx = await context(browser, user);
  const page = await ctx.newPage();
  await page.goto(`${CONSOLE_URL}/coda`);
  assert.ok(!page.url().startsWith(CONSOLE_URL), `an anonymous visit to the queue should go to the provider, not stay on ${page.url()}`);
  await login(page, user);
  assert.ok(page.url().startsWith(CONSOLE_URL), `after the login the browser should be back at the console, is at ${page.url()}: ${await page.textContent('body')}`);
  if (!new URL(page.url()).pathname.endsWith('/coda')) await page.goto(`${CONSOLE_URL}/coda`);
  return { ctx, page };
}

/** Marks the page's document, to tell later whether it was reloaded. */
async function mark(page) {
  await page.evaluate(() => {
    window.__senzaRicaricare = 'segno';
  });
}
async function notReloaded(page, what) {
  assert.equal(await page.evaluate(() => window.__senzaRicaricare), 'segno', `${what}: the page was reloaded (the update should be live)`);
}

/** Presses Tab until `locator` has the focus (at most `max` times); returns how many presses it took. */
async function tabTo(page, locator, max = 80) {
  const target = await locator.elementHandle();
  for (let i = 1; i <= max; i++) {
    await page.keyboard.press('Tab');
    if (await target.evaluate((el) => el === document.activeElement)) return i;
  }
  throw new Error(`Tab never reached ${locator}`);
}

const browser = await launch();
let failed = false;
try {
  const { page: anna } = await signIn(browser, 'op-anna');
  await step('the console sends an anonymous visitor to the provider and back to the queue; its pages carry a CSP nonce', async () => {
    assert.ok(new URL(anna.url()).pathname.endsWith('/coda'), anna.url());
    const response = await anna.request.get(`${CONSOLE_URL}/coda`);
    const csp = response.headers()['content-security-policy'] ?? '';
    assert.match(csp, /nonce-/, `the Content-Security-Policy of the queue: ${csp}`);
    assert.equal(await anna.getAttribute('html', 'lang'), 'it');
    const cookie = (await anna.context().cookies(CONSOLE_URL)).find((c) => c.name === 'st_console');
    assert.ok(cookie, 'the session cookie st_console');
    assert.equal(cookie.httpOnly, true, 'st_console is HttpOnly');
    // Lax, not Strict: the provider's redirect back to the callback is a cross-site navigation (session.rs).
    assert.ok(['Lax', 'Strict'].includes(cookie.sameSite), `st_console is SameSite=Lax or Strict, not ${cookie.sameSite}`);
    assert.equal(cookie.path, new URL(CONSOLE_URL).pathname, 'st_console is for the console only');
    for (const landmark of ['header', 'nav', 'main']) assert.equal(await anna.locator(landmark).count() > 0, true, `a <${landmark}>`);
  });
  const { page: bruno } = await signIn(browser, 'op-bruno');

  await step("op-anna's queue has sede 7000's referral and no request of another sede", async () => {
    await row(anna, RINVIO).waitFor({ timeout: 10000 });
    assert.match(await anna.textContent('h1'), /Coda della sede 7000/);
    const text = await anna.textContent('body');
    assert.ok(!text.includes(ALTRA_SEDE), `the queue of sede 7000 shows ${ALTRA_SEDE} of sede 1300`);
    await axe(anna, 'la coda');
    await shot(anna, 'coda.png');
  });

  await step("op-bruno keeps the queue open (same sede): the referral is there, not yet in carico", async () => {
    await row(bruno, RINVIO).waitFor({ timeout: 10000 });
    const cell = row(bruno, RINVIO).locator('.in-carico');
    assert.ok(!((await cell.textContent()) ?? '').includes('op-anna'), 'nobody has claimed it yet');
    await mark(bruno);
  });

  await step('op-lettore (sola lettura) reads the referral but has no form to act on it', async () => {
    const { ctx, page } = await signIn(browser, 'op-lettore');
    await row(page, RINVIO).waitFor({ timeout: 10000 });
    await Promise.all([page.waitForNavigation(), row(page, RINVIO).locator('a').first().click()]);
    await page.locator('#spiegazione').waitFor();
    for (const form of ['prendi', 'commenta', 'chiudi', 'rimetti', 'ridecidi']) {
      const n = await page.locator(`form#${form} button:not([disabled])`).count();
      assert.equal(n, 0, `a read-only operator has no usable form#${form}`);
    }
    await ctx.close();
  });

  await step('the referral: the explanation names a check, the note, the attachment is the PDF', async () => {
    await Promise.all([anna.waitForNavigation(), row(anna, RINVIO).locator('a').first().click()]);
    assert.match(await anna.textContent('h1'), new RegExp(`Richiesta ${RINVIO}`));
    assert.match(await anna.textContent('#presa-in-carico'), /Non in carico/);
    const spiegazione = await anna.textContent('#spiegazione');
    assert.match(spiegazione, /RDI-|GEN-05/, `#spiegazione: ${spiegazione}`);
    assert.match(await anna.textContent('#richiesta'), /si allega diffida/, 'the note of the request');
    const link = anna.locator('#allegati a').first();
    const href = await link.getAttribute('href');
    assert.ok(href, '#allegati has a link');
    const response = await anna.request.get(new URL(href, anna.url()).href);
    assert.equal(response.status(), 200, `GET ${href}`);
    const body = await response.body();
    assert.equal(body.subarray(0, 4).toString('latin1'), '%PDF', `the attachment ${href} is a PDF`);
    await axe(anna, 'la richiesta');
    await shot(anna, 'richiesta.png');
  });

  await step('keyboard only: the skip link is the first Tab stop; Tab and Enter claim the request', async () => {
    // A fresh load: the sequential focus navigation starts at the top of the document.
    await anna.goto(anna.url().split('#')[0]);
    await anna.keyboard.press('Tab');
    const first = await anna.evaluate(() => {
      const el = document.activeElement;
      return { tag: el?.tagName, href: el?.getAttribute('href'), text: el?.textContent?.trim() };
    });
    assert.equal(first.tag, 'A', `the first Tab stop is a link: ${JSON.stringify(first)}`);
    assert.match(first.href ?? '', /^#./, `the first Tab stop skips to the content: ${JSON.stringify(first)}`);
    const target = await anna.evaluate((id) => Boolean(document.getElementById(id)), first.href.slice(1));
    assert.ok(target, `the skip link's target ${first.href} exists`);

    const claim = anna.locator('form#prendi').getByRole('button', { name: 'Prendi in carico' });
    await tabTo(anna, claim);
    await Promise.all([anna.waitForNavigation(), anna.keyboard.press('Enter')]);
    assert.match(await anna.textContent('#presa-in-carico'), /In carico a op-anna/);
    assert.match(await anna.textContent('#esito-azione'), /\S/, 'the page says what happened');
    assert.equal(await anna.locator('form#prendi').count(), 0, 'claimed: no claim form any more');
  });

  await step("op-bruno's open queue shows op-anna in carico, without reloading", async () => {
    await bruno.waitForFunction(
      (p) => document.querySelector(`#coda tr[data-protocollo="${p}"] .in-carico`)?.textContent.includes('op-anna'),
      RINVIO,
      { timeout: LIVE_MS },
    );
    await notReloaded(bruno, 'the claim');
  });

  await step('op-anna comments and accepts the request', async () => {
    const commenta = anna.locator('form#commenta');
    await commenta.getByLabel('Commento al richiedente').fill('Diffida verificata con il consulente.');
    await Promise.all([anna.waitForNavigation(), commenta.getByRole('button', { name: 'Invia il commento' }).click()]);
    assert.match(await anna.textContent('#storico'), /Diffida verificata con il consulente\./, 'the comment is in the history');
    await axe(anna, 'la richiesta in carico, commentata');
    await shot(anna, 'richiesta-commentata.png');

    const chiudi = anna.locator('form#chiudi');
    await chiudi.locator('input[name="esito"][value="accolta"]').check();
    await chiudi.locator('textarea[name="nota"]').fill('Revoca accolta dopo la verifica della diffida.');
    await Promise.all([anna.waitForNavigation(), chiudi.getByRole('button', { name: 'Chiudi la richiesta' }).click()]);
    const esito = await anna.textContent('#esito-azione');
    assert.match(esito, /\S/, 'the page says what happened');
    console.log(`  #esito-azione after the close: ${esito.trim()}`);
    await shot(anna, 'dopo-chiusura.png');
  });

  await step("op-bruno's open queue loses the closed request, without reloading", async () => {
    await bruno.waitForFunction(
      (p) => !document.querySelector(`#coda tr[data-protocollo="${p}"]`),
      RINVIO,
      { timeout: LIVE_MS },
    );
    await notReloaded(bruno, 'the close');
  });

  await step('the pause button toggles aria-pressed and says so in #stato-aggiornamenti', async () => {
    const pause = bruno.locator('#pausa');
    const before = { pressed: await pause.getAttribute('aria-pressed'), stato: (await bruno.textContent('#stato-aggiornamenti')).trim() };
    assert.equal(before.pressed, 'false', 'live updates are on to begin with');
    await pause.click();
    await bruno.waitForFunction(() => document.querySelector('#pausa').getAttribute('aria-pressed') === 'true');
    const paused = (await bruno.textContent('#stato-aggiornamenti')).trim();
    assert.match(before.stato, /attivi/i, `#stato-aggiornamenti: ${before.stato}`);
    assert.match(paused, /in pausa/i, `#stato-aggiornamenti says the updates are paused: ${paused}`);
    await pause.click();
    await bruno.waitForFunction(() => document.querySelector('#pausa').getAttribute('aria-pressed') === 'false');
    assert.equal((await bruno.textContent('#stato-aggiornamenti')).trim(), before.stato, 'and that they are on again');
    await notReloaded(bruno, 'the pause button');
    await shot(bruno, 'coda-bruno.png');
  });

  await step(`the parked requests: ${SOSPESE} of one rule version, requeued in bulk after the confirmation`, async () => {
    await anna.goto(`${CONSOLE_URL}/coda/sospese`);
    await anna.locator('main').waitFor();
    await axe(anna, 'le richieste sospese');
    await shot(anna, 'sospese.png');
    const form = anna.locator('form#rimessa-in-blocco');
    const versions = await form.locator('select[name="versione"] option').evaluateAll((os) => os.map((o) => o.value).filter(Boolean));
    assert.equal(versions.length, 1, `the parked requests are of one rule version: ${JSON.stringify(versions)}`);
    await form.locator('select[name="versione"]').selectOption(versions[0]);
    await Promise.all([anna.waitForNavigation(), form.getByRole('button', { name: /^Rimetti in coda/ }).click()]);
    // The confirmation page: nothing is requeued before it.
    const conferma = anna.locator('form#conferma');
    await conferma.waitFor({ timeout: 10000 });
    assert.match(await anna.textContent('main'), new RegExp(`\\b${SOSPESE}\\b`), 'the confirmation says how many');
    await axe(anna, 'la conferma della rimessa in coda');
    await shot(anna, 'sospese-conferma.png');
    await Promise.all([anna.waitForNavigation(), conferma.getByRole('button', { name: 'Conferma' }).click()]);
    assert.ok(new URL(anna.url()).pathname.endsWith('/coda/sospese'), `back to the parked requests: ${anna.url()}`);
    const text = await anna.textContent('#esito-azione');
    assert.match(text, new RegExp(`\\b${SOSPESE} richieste rimesse in coda`), `#esito-azione says how many were requeued: ${text}`);
    await axe(anna, "l'esito della rimessa in coda");
    await shot(anna, 'sospese-esito.png');
  });

  await step('the operations page passes axe', async () => {
    await anna.goto(`${CONSOLE_URL}/operazioni`);
    await anna.locator('main').waitFor();
    await axe(anna, 'le operazioni');
    await shot(anna, 'operazioni.png');
    // The check can fail: an image without a text alternative and a field without a label are found.
    await anna.evaluate(() => {
      const main = document.querySelector('main');
      main.insertAdjacentHTML('beforeend', '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" width="20" height="20"><input type="text">');
    });
    await assert.rejects(axe(anna, 'una pagina guastata apposta'), /image-alt[\s\S]*label|label[\s\S]*image-alt/, 'axe finds what was broken on purpose');
    console.log('ok axe: a page broken on purpose fails the check');
  });

  await step("op-carla (sede 1300) sees her sede's referral and not sede 7000's", async () => {
    const { page } = await signIn(browser, 'op-carla');
    await row(page, ALTRA_SEDE).waitFor({ timeout: 10000 });
    assert.match(await page.textContent('h1'), /Coda della sede 1300/);
    assert.ok(!(await page.textContent('body')).includes(RINVIO), `sede 1300 sees ${RINVIO} of sede 7000`);
  });

  await step('the console is not for robots; an operator logs out with "Esci"', async () => {
    const robots = await anna.request.get(`${CONSOLE_URL}/robots.txt`);
    assert.equal(robots.status(), 200);
    assert.match(await robots.text(), /User-agent: \*\s+Disallow: \//);
    await anna.goto(`${CONSOLE_URL}/coda`);
    const old = (await anna.context().cookies(CONSOLE_URL)).find((c) => c.name === 'st_console');
    const withOld = () => fetch(`${CONSOLE_URL}/coda`, { redirect: 'manual', headers: { cookie: `st_console=${old.value}` } });
    assert.equal((await withOld()).status, 200, 'the session cookie opens the queue');
    await Promise.all([anna.waitForNavigation(), anna.locator('form#esci').getByRole('button', { name: 'Esci' }).click()]);
    assert.match(await anna.textContent('h1'), /Sei uscito/);
    await axe(anna, "la pagina dell'uscita");
    const left = (await anna.context().cookies(CONSOLE_URL)).find((c) => c.name === 'st_console');
    assert.ok(!left, `Esci removes the session cookie from the browser: ${JSON.stringify(left)}`);
    const after = await anna.request.get(`${CONSOLE_URL}/coda`, { maxRedirects: 0 });
    assert.equal(after.status(), 303, 'after Esci the queue wants a login');
    assert.match(after.headers().location ?? '', /\/login$/, `after Esci: ${after.headers().location}`);
    // A copy of the cookie taken before Esci opens nothing any more: the logout is recorded on the server, for
    // every instance, until the session would have expired.
    const copy = await withOld();
    assert.equal(copy.status, 303, 'after Esci a copy of the old session cookie is refused');
    assert.match(copy.headers.get('location') ?? '', /\/login$/, `the old cookie after Esci: ${copy.headers.get('location')}`);
  });

  assert.deepEqual(pageErrors, [], 'no script error on any page');
  console.log('console: all passed');
} catch (error) {
  failed = true;
  console.error(error.stack ?? error);
  // What each open page showed at the failure: a screenshot, and its main content in words.
  for (const [i, ctx] of browser.contexts().entries()) {
    for (const [j, page] of ctx.pages().entries()) {
      await page.screenshot({ path: join(SCREENSHOTS, `fallimento-${i}-${j}.png`), fullPage: true }).catch(() => {});
      const text = await page.textContent('main').catch(() => null);
      console.error(`-- page ${i}-${j} at the failure: ${page.url()}\n${(text ?? '').replace(/\s+/g, ' ').trim().slice(0, 1500)}`);
    }
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
