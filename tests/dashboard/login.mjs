// What every dashboard script shares: Debian's Chromium in a throw-away profile, and the sign-in
// through the identity provider's own login form.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

// Chromium with a new, empty profile; `close()` ends it and removes the profile. The region's
// certificate comes from its own CA, which this throw-away profile does not know.
export async function launch() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'scs-edge-chromium-'));
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
  const page = context.pages()[0] ?? await context.newPage();
  const close = async () => {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  };
  return { context, page, close };
}

// Opens `url` + `where` not signed in: the dashboard sends the browser to the identity provider's
// login form, which `username` fills in. Returns the login form's host and, when the region
// refused the sign-in, its error; otherwise the browser is on a dashboard page (it shows who is
// signed in) — the one asked for.
export async function signIn(page, url, where, username, password) {
  await page.goto(url + where);
  const seen = { login_host: new URL(page.url()).host };
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', password);
  await Promise.all([page.waitForURL((u) => u.href.startsWith(url)), page.click('button')]);
  seen.after_login = page.url();
  // The callback answers with the refusal, or with a page that continues to `where`.
  const landed = page.locator('[data-testid=error], [data-testid=operator]').first();
  await landed.waitFor();
  if (await landed.getAttribute('data-testid') === 'error') {
    seen.error = await landed.innerText();
  }
  return seen;
}
