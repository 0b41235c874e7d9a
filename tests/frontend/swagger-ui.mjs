// Drives Swagger UI in headless Chromium as a developer would: Authorize
// with a session token, open PATCH /api/admin/users/{userId}, Try it out,
// Execute. Prints what the page showed as one JSON line:
// {"status": <the response's status code>, "body": "<the response body shown>"}.
//
// Usage: node swagger-ui.mjs <service origin> <bearer token> <userId> <role>
// CHROMIUM names the browser (default /usr/bin/chromium).
import { chromium } from "playwright-core";

const [origin, token, userId, role] = process.argv.slice(2);
if (!origin || !token || !userId || !role) {
  console.error("usage: node swagger-ui.mjs <origin> <token> <userId> <role>");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  // The machine's network is closed: no background fetches, no sandbox as root.
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(20_000);
  await page.goto(`${origin}/swagger-ui/`);

  await page.click("button.btn.authorize");
  await page.fill(".auth-container input", token);
  await page.click(".auth-btn-wrapper button.authorize");
  await page.click(".auth-btn-wrapper button.btn-done");

  const operation = page.locator("#operations-admin-updateUserRole");
  await operation.locator(".opblock-summary").first().click();
  await operation.locator("button.try-out__btn").click();
  await operation.locator('tr[data-param-name="userId"] input').fill(userId);
  await operation.locator("textarea.body-param__text").fill(JSON.stringify({ role }));
  await operation.locator("button.execute").click();

  const shown = operation.locator(".live-responses-table .response").first();
  const status = (await shown.locator(".response-col_status").innerText()).trim();
  const body = await shown.locator(".response-col_description pre").first().innerText();
  console.log(JSON.stringify({ status: Number.parseInt(status, 10), body }));
} finally {
  await browser.close();
}
