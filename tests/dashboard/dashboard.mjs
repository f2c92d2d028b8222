// End-to-end check of the region dashboard in a real browser (Debian's Chromium, driven by
// playwright-core; no browser download). Logs in through the identity provider's own login form,
// reads the fleet table and a site's detail page, and saves screenshots.
//
//   node dashboard.mjs <region url> <site> <username> <password> <screenshot dir>
//
// Prints one JSON object on stdout with what the pages showed; the Rust test asserts on it.
import fs from 'node:fs';
import path from 'node:path';
import { launch, signIn } from './login.mjs';

const [url, site, username, password, shots] = process.argv.slice(2);
if (!shots) {
  console.error('usage: node dashboard.mjs <region url> <site> <username> <password> <screenshot dir>');
  process.exit(2);
}
fs.mkdirSync(shots, { recursive: true });
const { page, close } = await launch();
const result = {};
try {
  Object.assign(result, await signIn(page, url, '/', username, password));
  if (result.error) {
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
  await close();
}
console.log(JSON.stringify(result));
