// End-to-end check of the region dashboard in a real browser (Debian's Chromium, driven by
// playwright-core; no browser download). Logs in through the identity provider's own login form,
// reads the fleet table and a site's detail page, and saves screenshots.
//
//   node dashboard.mjs <region url> <site> <username> <password> <screenshot dir>
//
// Prints one JSON object on stdout with what the pages showed; the Rust test asserts on it.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [url, site, username, password, shots] = process.argv.slice(2);
if (!shots) {
  console.error('usage: node dashboard.mjs <region url> <site> <username> <password> <screenshot dir>');
  process.exit(2);
}
fs.mkdirSync(shots, { recursive: true });
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'scs-edge-chromium-'));
// A new, empty profile every run; the region's certificate comes from its own CA, which this
// throw-away profile does not know.
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  ignoreHTTPSErrors: true,
  viewport: { width: 1280, height: 800 },
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
const result = {};
try {
  const page = context.pages()[0] ?? await context.newPage();
  await page.goto(url);
  // Not signed in: the dashboard sends the browser to the identity provider's login form.
  result.login_host = new URL(page.url()).host;
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', password);
  await Promise.all([page.waitForURL((u) => u.href.startsWith(url)), page.click('button')]);
  result.after_login = page.url();
  const denied = await page.locator('[data-testid=error]').count();
  if (denied) {
    result.error = await page.locator('[data-testid=error]').innerText();
    await page.screenshot({ path: path.join(shots, 'dashboard-denied.png'), fullPage: true });
  } else {
    await page.waitForSelector('[data-testid=fleet]');
    result.operator = (await page.locator('[data-testid=operator]').innerText()).split(' · ')[0];
    result.summary = await page.locator('[data-testid=summary]').innerText();
    const row = page.locator(`[data-testid=site-row][data-site="${site}"]`);
    result.row = {
      state: await row.locator('[data-testid=state]').innerText(),
      connectivity: await row.locator('[data-testid=connectivity]').innerText(),
      health: await row.locator('[data-testid=health]').innerText(),
      versions: await row.locator('[data-testid=versions]').innerText(),
      last_seen: await row.locator('[data-testid=last-seen]').innerText(),
    };
    await page.screenshot({ path: path.join(shots, 'dashboard-fleet.png'), fullPage: true });
    await row.locator('a').click();
    await page.waitForSelector('[data-testid=site-name]');
    result.detail = {
      name: await page.locator('[data-testid=site-name]').innerText(),
      components: await page.locator('[data-testid=component]').evaluateAll((rows) => rows.map((r) => r.dataset.component)),
      history_rows: await page.locator('[data-testid=history-row]').count(),
      outages: await page.locator('[data-testid=outage]').count(),
      labels: await page.locator('[data-testid=labels]').innerText(),
    };
    await page.screenshot({ path: path.join(shots, 'dashboard-site.png'), fullPage: true });
  }
} finally {
  await context.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
