// Drives the real Temporal UI as an SRE would, for tests/e2e/test_ui.py: open a promotion awaiting approval from
// the workflow list, read its summary, details and current details (User Metadata), send decisions through
// "More Actions → Send an Update" and report what the dialog answered. Debian's chromium, headless; playwright-core
// never downloads a browser. Usage: node promotion.mjs PLAN.json  (prints one JSON object on stdout)
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const plan = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const STEP_MS = plan.stepTimeoutMs ?? 60000;
const shots = [];
const out = { shots, updates: [] };

async function shot(page, name) {
  const file = path.join(plan.shots, name);
  await page.screenshot({ path: file, fullPage: true });
  shots.push(file);
}

async function openWorkflow(page) {
  await page.goto(`${plan.ui}/namespaces/${encodeURIComponent(plan.namespace)}/workflows`);
  // From the workflow list, as a person would. NB: never wait for 'networkidle' on these pages: the history view
  // keeps a long poll open (waitNewEvent=true), so the network is never idle.
  await page.getByRole('link', { name: plan.workflowId, exact: true }).click({ timeout: STEP_MS });
  await page.getByRole('heading', { name: plan.workflowId }).waitFor({ timeout: STEP_MS });
}

async function readMetadata(page) {
  await page.getByRole('tab', { name: 'User Metadata' }).click({ timeout: STEP_MS });
  await page.locator('iframe[src*="/render"]').first().waitFor({ timeout: STEP_MS });
  // Each section shows either a placeholder ("No summary available") or the markdown the UI renders in an iframe
  // (/render?content=...): read the placeholders from the page text and the markdown from the iframes, in order.
  const text = await page.locator('body').innerText();
  const m = text.match(/\nSummary\n([\s\S]*?)\n?Details\n([\s\S]*?)\n?Current Details\n/);
  if (!m) throw new Error('no Summary / Details / Current Details sections on the User Metadata tab');
  const rendered = [];
  for (const frame of await page.locator('iframe[src*="/render"]').all()) {
    rendered.push(await frame.contentFrame().locator('body').innerText());
  }
  const section = (raw) => (raw.trim() ? raw.trim() : rendered.shift() ?? '').trim();
  out.summary = section(m[1]);
  out.details = section(m[2]);
  out.currentDetails = (rendered.shift() ?? '').trim();
}

async function sendUpdate(page, update, index) {
  await page.getByRole('button', { name: 'More Actions' }).click({ timeout: STEP_MS });
  await page.getByRole('menuitem', { name: 'Send an Update' }).click({ timeout: STEP_MS });
  const dialog = page.locator('dialog[open]').filter({ hasText: 'Send an Update' });
  await dialog.getByTestId('update-select-button').click({ timeout: STEP_MS });
  await dialog.getByRole('option', { name: new RegExp(`^${update.name}\\b`) }).click({ timeout: STEP_MS });
  const data = dialog.getByRole('textbox', { name: 'Data' });
  await data.click();
  await page.keyboard.press('ControlOrMeta+A');  // the dialog keeps the previous Update's data
  await page.keyboard.insertText(JSON.stringify(update.payload));
  // NB: the editor hands its text to the form when it loses focus by keyboard; a Submit clicked straight from the
  // editor (or after clicking elsewhere in the dialog) sent no request at all.
  await page.keyboard.press('Tab');
  const sent = page.waitForRequest((r) => r.method() === 'POST' && r.url().includes(`/update/${update.name}`),
    { timeout: STEP_MS }).then(() => true, () => false);
  await dialog.getByRole('button', { name: 'Submit' }).click();
  if (!(await sent)) throw new Error(`Submit sent no ${update.name} request within ${STEP_MS} ms`);
  // Either the dialog shows the failure, or it closes and a toast reports success.
  const failure = dialog.getByRole('alert').filter({ hasText: /\S/ });
  const result = { name: update.name, label: update.label };
  const outcome = await Promise.race([
    failure.first().waitFor({ timeout: STEP_MS }).then(() => 'failed', () => 'timeout'),
    dialog.waitFor({ state: 'detached', timeout: STEP_MS }).then(() => 'closed', () => 'timeout'),
  ]);
  if (outcome === 'timeout') throw new Error(`no answer to ${update.label} in the dialog within ${STEP_MS} ms`);
  if (outcome === 'failed') {
    result.failed = true;
    result.text = await failure.first().innerText();
    await shot(page, `${String(index).padStart(2, '0')}-${update.label}.png`);
    await dialog.getByRole('button', { name: 'Cancel' }).first().click();
    await dialog.waitFor({ state: 'detached', timeout: STEP_MS });
  } else {
    result.failed = false;
    const toast = page.getByText(/Update (successful|success)/i).first();
    result.text = await toast.waitFor({ timeout: 5000 }).then(() => toast.innerText(), () => '');
    await shot(page, `${String(index).padStart(2, '0')}-${update.label}.png`);
  }
  out.updates.push(result);
}

const browser = await chromium.launch({
  executablePath: plan.chromium, headless: true,
  // NB: root in CI containers has no user namespace for chromium's sandbox.
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.setDefaultTimeout(STEP_MS);
  // Only the UI under test: no news feed or telemetry calls out of a machine that may be offline.
  await page.route((url) => !url.href.startsWith(plan.ui), (route) => route.abort());
  const started = Date.now();
  await openWorkflow(page);
  await shot(page, '01-promotion.png');
  await readMetadata(page);
  await shot(page, '02-user-metadata.png');
  let index = 3;
  for (const update of plan.updates) {
    await sendUpdate(page, update, index++);
  }
  out.seconds = (Date.now() - started) / 1000;
} catch (err) {
  out.error = String(err && err.stack || err);
  try {
    const [page] = browser.contexts()[0]?.pages() ?? [];
    if (page) await shot(page, '99-error.png');
  } catch { /* the error above is what matters */ }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out));
process.exitCode = out.error ? 1 : 0;
