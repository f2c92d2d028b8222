// A rollout's page and its buttons in a real browser (Debian's Chromium, driven by playwright-core),
// signed in through the identity provider's own login form as dashboard.mjs is.
//
//   node rollout.mjs <region url> <rollout> <username> <password> <screenshot dir>
//
// An operator's run reads the (halted) rollout; posts a forged form to it from a page of another
// origin (about:blank), reading the rollout over the REST API before and after when
// SCS_EDGE_BEARER holds an operator's token; then resumes, pauses and stops it with the page's own
// buttons, reading the page after each. A refused sign-in ends with a form post from the region's
// own origin with a guessed token. Prints one JSON object on stdout; the Rust test asserts on it.
import { request } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { launch, signIn } from './login.mjs';

const [url, rollout, username, password, shots] = process.argv.slice(2);
if (!shots) {
  console.error('usage: node rollout.mjs <region url> <rollout> <username> <password> <screenshot dir>');
  process.exit(2);
}
fs.mkdirSync(shots, { recursive: true });
const target = `${url}/rollouts/${rollout}`;
// How long a form post may take to land on its page.
const PATIENCE_MS = 30_000;

// Everything the rollout page shows, read in one go (the page reloads itself every 10 s).
function read(page) {
  return page.evaluate(() => {
    const one = (root, testid) => root.querySelector(`[data-testid=${testid}]`);
    const state = (root, testid) => one(root, testid)?.querySelector('[data-state]')?.dataset.state ?? null;
    return {
      url: location.href,
      operator: one(document, 'operator')?.innerText.split(' · ')[0] ?? null,
      state: state(document, 'rollout-state'),
      reason: one(document, 'halt-reason')?.innerText ?? null,
      waves: [...document.querySelectorAll('[data-testid=wave]')].map((wave) => ({
        wave: wave.dataset.wave,
        status: wave.dataset.status,
        counts: wave.nextElementSibling?.dataset.testid === 'wave-counts' ? wave.nextElementSibling.innerText : null,
      })),
      sites: Object.fromEntries([...document.querySelectorAll('[data-testid=rollout-site]')].map((row) => [
        row.dataset.site,
        { state: state(row, 'site-state'), detail: one(row, 'site-detail')?.innerText ?? null },
      ])),
      buttons: [...document.querySelectorAll('[data-testid=actions] button[data-testid], [data-testid=actions] a[data-testid]')].map((b) => b.dataset.testid),
      error: one(document, 'error')?.innerText ?? null,
    };
  });
}

// Runs `submit`, which posts a form to `action`, and follows the browser to the page it lands on:
// the post's status (303 when done) and that page's URL. Each step waits for the browser's own
// events: the post going out, then the main frame committing the page that answered it.
async function post(page, action, submit) {
  let sent = null;
  let onRequest;
  let onNavigated;
  let deadline;
  const landed = new Promise((resolve, reject) => {
    onRequest = (req) => {
      if (req.method() === 'POST' && req.url() === action && req.isNavigationRequest()) sent = req;
    };
    onNavigated = (frame) => {
      if (frame === page.mainFrame() && sent) resolve(frame.url());
    };
    page.on('request', onRequest);
    page.on('framenavigated', onNavigated);
    deadline = setTimeout(() => reject(new Error(`no page after POST ${action} (sent: ${!!sent})`)), PATIENCE_MS);
  }).finally(() => {
    clearTimeout(deadline);
    page.off('request', onRequest);
    page.off('framenavigated', onNavigated);
  });
  await submit();
  const landedOn = await landed;
  await page.waitForLoadState('load');
  const response = await sent.response();
  return { status: response?.status() ?? null, url: landedOn };
}

// Presses the page's button `testid` and reads the page the form post leads back to.
async function press(page, testid, action) {
  const posted = await post(page, `${target}/${action}`, () => page.getByTestId(testid).click());
  return { ...posted, page: await read(page) };
}

// The rollout over the REST API, as an operator with a bearer token sees it (no browser cookie).
async function rest() {
  const token = process.env.SCS_EDGE_BEARER;
  if (!token) return null;
  const api = await request.newContext({ ignoreHTTPSErrors: true, extraHTTPHeaders: { authorization: `Bearer ${token}` } });
  try {
    const response = await api.get(`${url}/api/v1/rollouts/${rollout}`);
    const body = await response.json();
    return { status: response.status(), state: body.progress?.state, reason: body.progress?.reason, revision: body.revision, updated_at: body.updated_at };
  } finally {
    await api.dispose();
  }
}

const { context, page, close } = await launch();
const result = {};
try {
  Object.assign(result, await signIn(page, url, `/rollouts/${rollout}`, username, password));
  if (result.error) {
    await page.screenshot({ path: path.join(shots, 'rollout-denied.png'), fullPage: true });
    // From the region's own origin (the refusal is its page), with a guessed token: no session.
    await page.evaluate((action) => {
      const form = document.createElement('form');
      form.method = 'post';
      form.action = action;
      form.innerHTML = '<input name="form_token" value="guess"><input name="reason" value="not an operator"><button id="forged">Stop</button>';
      document.body.append(form);
    }, `${target}/stop`);
    result.post = await post(page, `${target}/stop`, () => page.locator('#forged').click());
    result.post.page = await read(page);
  } else {
    await page.waitForURL(target);
    result.halted = await read(page);
    await page.screenshot({ path: path.join(shots, 'rollout-halted.png'), fullPage: true });

    // A page of another origin in the same browser posts a stop with a guessed token: the one
    // action a halted rollout would take, and one that cannot be undone.
    result.rest_before_forgery = await rest();
    const forger = await context.newPage();
    await forger.goto('about:blank');
    await forger.setContent(
      `<form method="post" action="${target}/stop"><input name="form_token" value="guess">` +
      '<input name="reason" value="forged"><button>Stop</button></form>',
    );
    result.forged = await post(forger, `${target}/stop`, () => forger.locator('button').click());
    result.forged.page = await read(forger);
    await forger.screenshot({ path: path.join(shots, 'rollout-forged.png'), fullPage: true });
    await forger.close();
    result.rest_after_forgery = await rest();
    await page.bringToFront();
    await page.reload();
    result.after_forgery = await read(page);

    result.resumed = await press(page, 'resume', 'resume');
    result.paused = await press(page, 'pause', 'pause');
    await Promise.all([page.waitForURL(`${target}/stop`), page.getByTestId('stop').click()]);
    await page.getByTestId('stop-reason').fill('the canary rolled it back');
    result.stopped = await press(page, 'confirm-stop', 'stop');
    await page.screenshot({ path: path.join(shots, 'rollout-stopped.png'), fullPage: true });
  }
} finally {
  await close();
}
console.log(JSON.stringify(result));
