// Nodemailer's pooled transport as a benchmark contender.
//
//     node bench.js '{"target": {...}, "threads": 4, "messages": 400}'
//
// Sends `messages` messages with `threads` sends in flight at once over one pool
// of `threads` connections, after a warm-up of `warm_up` messages per connection
// (which opens every connection and lets the JIT compile the hot code), and
// prints one JSON line in the shape benchmarks/_worker.py prints.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const nodemailer = require("nodemailer");

// The same name the Python contenders say in EHLO.
const CLIENT_NAME = "bench.example.test";
// smtppool's default max_messages, so that both recycle sessions as often.
const MAX_MESSAGES = 100;

function transport(target, threads) {
  const options = {
    host: target.host,
    port: target.port,
    name: CLIENT_NAME,
    pool: true,
    maxConnections: threads,
    maxMessages: MAX_MESSAGES,
    secure: false,
  };
  if (target.tls) {
    options.requireTLS = true;
    options.tls = { ca: fs.readFileSync(target.ca_file) };
    options.auth = { user: target.username, pass: target.password };
  } else {
    options.ignoreTLS = true;
  }
  return nodemailer.createTransport(options);
}

// The fields of smtppool.testing.demo.build_message(n).
function message(n) {
  return {
    from: "app@example.test",
    to: `user${n}@example.test`,
    subject: `Your receipt #${n}`,
    messageId: `<${crypto.randomUUID().replaceAll("-", "")}@example.test>`,
    text: `Thank you for order ${n}.\n`,
  };
}

async function main() {
  const job = JSON.parse(process.argv[2]);
  const mailer = transport(job.target, job.threads);

  // `threads` chains of sends at once, so that the pool opens every connection
  // and each carries about `warm_up` messages before the clock starts.
  async function warm(chain) {
    for (let n = 0; n < job.warm_up; n++) {
      await mailer.sendMail(message(-1 - chain * job.warm_up - n));
    }
  }
  await Promise.all(Array.from({ length: job.threads }, (_, i) => warm(i)));

  const latencies = [];
  const errors = [];
  let next = 0;
  async function worker() {
    while (next < job.messages) {
      const n = next++;
      const started = process.hrtime.bigint();
      try {
        await mailer.sendMail(message(n));
      } catch (error) {
        errors.push(String(error));
      }
      latencies.push(Number(process.hrtime.bigint() - started) / 1e9);
    }
  }

  const cpuStarted = process.cpuUsage();
  const started = process.hrtime.bigint();
  await Promise.all(Array.from({ length: job.threads }, worker));
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = process.cpuUsage(cpuStarted);
  mailer.close();

  console.log(
    JSON.stringify({
      elapsed,
      cpu: (cpu.user + cpu.system) / 1e6,
      messages: job.messages,
      latencies,
      errors: errors.length,
      first_error: errors[0] ?? null,
    }),
  );
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
