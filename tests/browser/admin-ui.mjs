// The operator status page (GET /admin/ui) in a real browser: Debian's
// chromium driven by playwright-core, against a running gateway (the demo).
//
//   ADMIN_URL      the admin listener, e.g. http://127.0.0.1:9090 (required)
//   ADMIN_TOKEN    its admin token (required)
//   EXPECT_CLOUDS  the clouds whose groups must show, comma-separated (required)
//   CHROMIUM       the browser (default /usr/bin/chromium)
//   DRAIN_BACKEND  the backend to drain and undrain (default: the first
//                  undrained one in the first expected cloud)
//   WEIGHTS_ROUTE  the route whose weights to set (default: the first with
//                  two or more targets)
//   SCREENSHOT     a PNG path: a full-page screenshot once logged in
//   TIMEOUT_MS     how long each step may take (default 15000)
//
// It leaves the gateway as it found it (the backend undrained, the route's
// weights back to the config). Exit 0 and one `PASS` line on success;
// non-zero and a `FAIL` line saying what went wrong otherwise.

import { chromium } from 'playwright-core';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const started = Date.now();

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`FAIL admin-ui: set ${name} (see the top of tests/browser/admin-ui.mjs)`);
    process.exit(2);
  }
  return v;
}

const ADMIN_URL = need('ADMIN_URL').replace(/\/+$/, '');
const TOKEN = need('ADMIN_TOKEN');
const CLOUDS = need('EXPECT_CLOUDS')
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT = Number(process.env.TIMEOUT_MS || 15000);
const SCREENSHOT = process.env.SCREENSHOT || '';

class Fail extends Error {}
const fail = (msg) => {
  throw new Fail(msg);
};
const step = (msg) => console.error(`admin-ui: ${msg}`);

/** The admin API from Node, as the page's ground truth. */
async function admin(method, path) {
  const res = await fetch(ADMIN_URL + path, { method, headers: { Authorization: `Bearer ${TOKEN}` } });
  const text = await res.text();
  if (!res.ok) fail(`${method} ${path} answered ${res.status}: ${text.slice(0, 300)}`);
  return JSON.parse(text);
}

/** Polls `probe` until it returns a truthy value; fails with `what` and the last value seen. */
async function until(what, probe, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await probe();
    if (last && last.ok !== false) return last;
    if (Date.now() > deadline) fail(`${what} (after ${timeout} ms; last seen: ${JSON.stringify(last && last.seen !== undefined ? last.seen : last)})`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function visible(locator, what) {
  try {
    await locator.first().waitFor({ state: 'visible', timeout: TIMEOUT });
  } catch {
    fail(`${what} did not show within ${TIMEOUT} ms`);
  }
}

async function hidden(locator, what) {
  try {
    await locator.first().waitFor({ state: 'hidden', timeout: TIMEOUT });
  } catch {
    fail(`${what} did not go away within ${TIMEOUT} ms`);
  }
}

const storage = (page) =>
  page.evaluate(() => ({
    session: Object.keys(sessionStorage).map((k) => [k, sessionStorage.getItem(k)]),
    local: Object.keys(localStorage).length,
    cookie: document.cookie,
    url: location.href,
  }));

let browser;
let page;
const problems = []; // errors the page itself raised (script errors, CSP refusals)

async function main() {
  // Is the gateway there at all, and does the token work?
  let backends;
  try {
    backends = (await admin('GET', '/admin/backends')).backends;
  } catch (e) {
    fail(`the admin API at ${ADMIN_URL} does not answer with the token: ${e.message}`);
  }
  const routes = (await admin('GET', '/admin/routes')).routes;
  for (const c of CLOUDS) {
    if (!backends.some((b) => b.cloud === c)) fail(`the gateway has no backend in cloud ${c} (EXPECT_CLOUDS=${CLOUDS.join(',')})`);
  }
  const victim =
    process.env.DRAIN_BACKEND ||
    (backends.find((b) => b.cloud === CLOUDS[0] && !b.drained) || fail(`no undrained backend in cloud ${CLOUDS[0]}`)).name;
  if (!backends.some((b) => b.name === victim)) fail(`DRAIN_BACKEND=${victim} is not a backend of the gateway`);
  const route =
    routes.find((r) => (process.env.WEIGHTS_ROUTE ? r.name === process.env.WEIGHTS_ROUTE : r.targets.length >= 2)) ||
    fail(process.env.WEIGHTS_ROUTE ? `no route ${process.env.WEIGHTS_ROUTE}` : 'no route with two or more targets');

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--headless=new', '--disable-gpu', '--disable-dev-shm-usage'],
    timeout: 60000,
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (e) => problems.push(`script error: ${e.message}`));
  page.on('console', (m) => {
    // A 401 or 400 the page asked for is logged by the browser: expected.
    if (m.type() === 'error' && !/^Failed to load resource/.test(m.text())) problems.push(`console: ${m.text()}`);
  });

  step(`open ${ADMIN_URL}/admin/ui`);
  const res = await page.goto(`${ADMIN_URL}/admin/ui`, { waitUntil: 'load' });
  if (!res || res.status() !== 200) fail(`GET /admin/ui answered ${res ? res.status() : 'nothing'}`);
  if (!/^text\/html/.test(res.headers()['content-type'] || '')) fail(`GET /admin/ui is ${res.headers()['content-type']}, not text/html`);
  if (!res.headers()['content-security-policy']) step('note: /admin/ui is served without a Content-Security-Policy');

  await visible(page.getByTestId('login-form'), 'the login form');
  if (await page.getByTestId('dashboard').isVisible()) fail('the dashboard shows before logging in');

  step('log in with a wrong token');
  await page.getByTestId('login-token').fill(`wrong-${Math.random().toString(36).slice(2)}`);
  await page.getByTestId('login-submit').click();
  await visible(page.getByTestId('login-error'), 'the error for a wrong token');
  const loginError = await page.getByTestId('login-error').textContent();
  if (!/401|refused/i.test(loginError)) fail(`the wrong-token message says neither 401 nor refused: ${loginError}`);
  if (await page.getByTestId('dashboard').isVisible()) fail('a wrong token opened the dashboard');
  if ((await storage(page)).session.length) fail('a wrong token was kept in sessionStorage');

  step('log in with the right token');
  await page.getByTestId('login-token').fill(TOKEN);
  await page.getByTestId('login-submit').click();
  await visible(page.getByTestId('dashboard'), 'the dashboard after logging in');
  await hidden(page.getByTestId('login-form'), 'the login form');
  const st = await storage(page);
  if (!st.session.some(([, v]) => v === TOKEN)) fail('the token is not in sessionStorage after logging in');
  if (st.local) fail('the page wrote to localStorage');
  if (st.cookie) fail(`the page set a cookie: ${st.cookie}`);
  if (st.url.includes(TOKEN)) fail('the token is in the URL');

  step(`wait for the clouds ${CLOUDS.join(', ')}`);
  for (const c of CLOUDS) {
    await visible(page.getByTestId(`cloud-${c}`), `the group of cloud ${c}`);
    await visible(page.getByTestId(`cloud-${c}`).locator('article'), `a backend in cloud ${c}`);
  }
  for (const b of backends) {
    const card = page.getByTestId(`backend-${b.name}`);
    await visible(card, `backend ${b.name}`);
    if (b.cloud) {
      const inCloud = await page.getByTestId(`cloud-${b.cloud}`).getByTestId(`backend-${b.name}`).count();
      if (!inCloud) fail(`backend ${b.name} is not in the group of its cloud ${b.cloud}`);
    }
  }
  await until('the rates show numbers', async () => {
    const t = (await page.getByTestId('rate-requests').textContent()).trim();
    return /^[0-9.]+$/.test(t) || { ok: false, seen: t };
  });

  if (SCREENSHOT) {
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    step(`screenshot: ${SCREENSHOT}`);
  }

  step(`drain ${victim} in the page`);
  await page.getByTestId(`drain-${victim}`).click();
  await until(`GET /admin/backends shows ${victim} drained`, async () => {
    const b = (await admin('GET', '/admin/backends')).backends.find((x) => x.name === victim);
    return b.drained || { ok: false, seen: b.drained };
  });
  await until(`the page shows ${victim} drained`, async () => {
    const t = (await page.getByTestId(`state-${victim}`).textContent()).trim();
    return t === 'drained' || { ok: false, seen: t };
  });
  await visible(page.getByTestId(`undrain-${victim}`), `the Undrain button of ${victim}`);

  step(`undrain ${victim} in the page`);
  await page.getByTestId(`undrain-${victim}`).click();
  await until(`GET /admin/backends shows ${victim} undrained`, async () => {
    const b = (await admin('GET', '/admin/backends')).backends.find((x) => x.name === victim);
    return !b.drained || { ok: false, seen: b.drained };
  });
  await until(`the page shows ${victim} undrained`, async () => {
    const t = (await page.getByTestId(`state-${victim}`).textContent()).trim();
    return t !== 'drained' || { ok: false, seen: t };
  });
  await visible(page.getByTestId(`drain-${victim}`), `the Drain button of ${victim}`);

  const rn = route.name;
  step(`route ${rn}: an API error shows in the page`);
  for (const t of route.targets) await page.getByTestId(`weight-input-${rn}-${t.backend}`).fill('0');
  await page.getByTestId(`apply-weights-${rn}`).click();
  await visible(page.getByTestId('error'), 'the error banner for all-zero weights');
  const banner = await page.getByTestId('error-text').textContent();
  if (!banner.includes(`/admin/routes/${rn}/weights`)) fail(`the error banner does not name the call: ${banner}`);
  if ((await admin('GET', '/admin/routes')).routes.find((r) => r.name === rn).weights_overridden) {
    fail(`a refused weight change still overrode route ${rn}`);
  }

  step(`route ${rn}: set weights in the page`);
  const want = {};
  route.targets.forEach((t, i) => {
    let w = 10 * (i + 1) + 5;
    if (w === t.effective_weight) w += 1;
    want[t.backend] = w;
  });
  for (const [b, w] of Object.entries(want)) await page.getByTestId(`weight-input-${rn}-${b}`).fill(String(w));
  await page.getByTestId(`apply-weights-${rn}`).click();
  await until(`GET /admin/routes shows route ${rn} with weights ${JSON.stringify(want)}`, async () => {
    const r = (await admin('GET', '/admin/routes')).routes.find((x) => x.name === rn);
    const seen = Object.fromEntries(r.targets.map((t) => [t.backend, t.effective_weight]));
    const ok = r.weights_overridden && r.targets.every((t) => t.effective_weight === want[t.backend]);
    return ok || { ok: false, seen: { overridden: r.weights_overridden, seen } };
  });
  await hidden(page.getByTestId('error'), 'the error banner after a good change');
  for (const [b, w] of Object.entries(want)) {
    await until(`the page shows ${b}'s effective weight ${w} on ${rn}`, async () => {
      const t = (await page.getByTestId(`effective-${rn}-${b}`).textContent()).trim();
      return t === String(w) || { ok: false, seen: t };
    });
  }
  await visible(page.getByTestId(`overridden-${rn}`), `the overridden mark of route ${rn}`);

  step(`route ${rn}: back to the configured weights`);
  await page.getByTestId(`reset-weights-${rn}`).click();
  await until(`GET /admin/routes shows route ${rn} back to its configured weights`, async () => {
    const r = (await admin('GET', '/admin/routes')).routes.find((x) => x.name === rn);
    const ok = !r.weights_overridden && r.targets.every((t) => t.effective_weight === t.weight);
    return ok || { ok: false, seen: r };
  });
  await hidden(page.getByTestId(`overridden-${rn}`), `the overridden mark of route ${rn}`);

  step('reload: still logged in');
  await page.reload({ waitUntil: 'load' });
  await visible(page.getByTestId('dashboard'), 'the dashboard after a reload');
  if (await page.getByTestId('login-form').isVisible()) fail('a reload asked for the token again');
  await visible(page.getByTestId(`cloud-${CLOUDS[0]}`), `the group of cloud ${CLOUDS[0]} after a reload`);

  step('log out');
  await page.getByTestId('logout').click();
  await visible(page.getByTestId('login-form'), 'the login form after logging out');
  await hidden(page.getByTestId('dashboard'), 'the dashboard after logging out');
  if (await page.locator('article.backend').count()) fail('backend data is still on the page after logging out');
  const after = await storage(page);
  if (after.session.length || after.local || after.cookie) fail(`something is left after logging out: ${JSON.stringify(after)}`);
  await page.reload({ waitUntil: 'load' });
  await visible(page.getByTestId('login-form'), 'the login form after logging out and reloading');
  if (await page.getByTestId('dashboard').isVisible()) fail('the dashboard shows after logging out and reloading');

  if (problems.length) fail(`the page raised errors:\n  ${problems.join('\n  ')}`);
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  console.log(
    `PASS admin-ui: wrong token refused; clouds ${CLOUDS.join(', ')} shown; ${victim} drained and undrained; ` +
      `route ${rn} weights set and reset; session kept on reload, gone after logout (${secs} s)`,
  );
}

let code = 0;
try {
  await main();
} catch (e) {
  code = 1;
  const msg = e instanceof Fail ? e.message : e && e.stack ? e.stack : String(e);
  console.log(`FAIL admin-ui: ${msg}`);
  if (problems.length) console.log(`  the page also raised:\n    ${problems.join('\n    ')}`);
  if (page) {
    const shot = join(tmpdir(), `skygate-admin-ui-failure-${process.pid}.png`);
    try {
      await page.screenshot({ path: shot, fullPage: true });
      console.log(`  screenshot of the page: ${shot}`);
    } catch {
      /* the browser is gone */
    }
  }
} finally {
  if (browser) await browser.close().catch(() => {});
}
process.exit(code);
