#!/usr/bin/env node
/**
 * The container image's HEALTHCHECK: GET /v1/health/live of the server in the same container,
 * exit 0 on 200, else 1 with the reason on stderr. Plain node, because slim images have no curl.
 *
 * URL: the first argument, else $MINKMS_HEALTH_URL, else https://127.0.0.1:7373/v1/health/live.
 * The certificate is not verified: the check talks to its own container over loopback, where the
 * certificate names the service (not 127.0.0.1) and proves nothing; liveness is the status code.
 * Liveness needs no client certificate.
 */
import { request } from 'node:https';

const url = new URL(process.argv[2] || process.env.MINKMS_HEALTH_URL || 'https://127.0.0.1:7373/v1/health/live');
const fail = (why) => {
  process.stderr.write(`healthcheck ${url.href}: ${why}\n`);
  process.exit(1);
};
const req = request(url, { method: 'GET', rejectUnauthorized: false, timeout: 4000 }, (res) => {
  res.resume();
  if (res.statusCode === 200) process.exit(0);
  fail(`HTTP ${res.statusCode}`);
});
req.on('timeout', () => req.destroy(new Error('no answer within 4 s')));
req.on('error', (err) => fail(err.message));
req.end();
