// A Node program using the unmodified @sentry/node, run by tests/test_errors_sentry_node.py.
// It reports a captured exception, a captureMessage, a user and tags, and 20 exceptions
// captured at once (sent in parallel by the SDK's transport), flushes, and prints the ids.
"use strict";
const Sentry = require("@sentry/node");

const dsn = process.argv[2];
Sentry.init({ dsn, release: "shop-js@2.0.1", environment: "staging" });
Sentry.setUser({ id: "u-7", email: "bo@example.org" });
Sentry.setTag("tenant", "acme");

function parseOrder(number) {
  throw new TypeError(`order ${number} has no total`);
}

function loadCustomer(id) {
  throw new RangeError(`customer ${id} not found`);
}

async function main() {
  const ids = { exception: null, message: null, parallel: [] };
  try {
    parseOrder(17);
  } catch (err) {
    ids.exception = Sentry.captureException(err);
  }
  ids.message = Sentry.captureMessage("cache warmed in 35 ms");
  ids.parallel = await Promise.all(
    Array.from({ length: 20 }, (_, k) =>
      Promise.resolve().then(() => {
        try {
          loadCustomer(1000 + k);
        } catch (err) {
          return Sentry.captureException(err);
        }
        return null;
      }),
    ),
  );
  const flushed = await Sentry.flush(20000);
  process.stdout.write(JSON.stringify({ ids, flushed, sdk: Sentry.SDK_VERSION }) + "\n");
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack) + "\n");
  process.exit(1);
});
