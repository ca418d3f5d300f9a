// Drives flashlive's Live WebSocket API with the official @google/genai SDK and reports what it saw.
//
// Env: FLASHLIVE_BASE_URL (e.g. http://127.0.0.1:8080; the SDK maps http to ws) and FLASHLIVE_MODEL.
// Prints one JSON line to stdout and exits 0; on any unexpected error or timeout prints it to
// stderr, exits 1.

import { GoogleGenAI, Modality } from "@google/genai";

const OVERALL_TIMEOUT_MS = 90_000;
const STEP_TIMEOUT_MS = 60_000;
const CONFIG = { responseModalities: [Modality.TEXT], maxOutputTokens: 24, temperature: 0 };

function requireEnv(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`environment variable ${name} is required`);
  }
  return value;
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function describeError(event) {
  const err = event?.error ?? event;
  return err instanceof Error ? err.message : String(err?.message ?? err);
}

// Waits on a session's messages: each `nextTurn()` resolves with the messages up to and including
// the one whose serverContent has turnComplete; an error or a close rejects whatever is pending.
class TurnCollector {
  constructor() {
    this.pending = [];
    this.waiter = null;
    this.failure = null;
    this.closeEvent = null;
    // Rejects on the first error or close, so a session refused before setupComplete (which
    // `connect` alone would wait for forever) fails at once.
    this.failed = new Promise((_, reject) => {
      this.rejectFailed = reject;
    });
    this.failed.catch(() => {});
  }

  onmessage(message) {
    this.pending.push(message);
    if (message.serverContent?.turnComplete && this.waiter) {
      const messages = this.pending;
      this.pending = [];
      const { resolve } = this.waiter;
      this.waiter = null;
      resolve(messages);
    }
  }

  onerror(event) {
    this.fail(new Error(`websocket error: ${describeError(event)}`));
  }

  onclose(event) {
    this.closeEvent = { code: event.code, reason: String(event.reason ?? "") };
    this.fail(new Error(`session closed with ${event.code}: ${event.reason}`));
  }

  fail(error) {
    this.failure ??= error;
    this.rejectFailed(this.failure);
    if (this.waiter) {
      const { reject } = this.waiter;
      this.waiter = null;
      reject(this.failure);
    }
  }

  nextTurn() {
    const done = this.pending.findIndex((m) => m.serverContent?.turnComplete);
    if (done >= 0) {
      return Promise.resolve(this.pending.splice(0, done + 1));
    }
    if (this.failure) {
      return Promise.reject(this.failure);
    }
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }
}

function summarizeTurn(messages) {
  let text = "";
  let usage = null;
  for (const message of messages) {
    for (const part of message.serverContent?.modelTurn?.parts ?? []) {
      text += part.text ?? "";
    }
    if (message.usageMetadata) {
      usage = message.usageMetadata;
    }
  }
  return {
    text,
    messages: messages.length,
    turnComplete: Boolean(messages.at(-1)?.serverContent?.turnComplete),
    usage,
    hasTotalTokenCount: typeof usage?.totalTokenCount === "number",
  };
}

async function conversation(ai, model) {
  const collector = new TurnCollector();
  const connecting = ai.live.connect({
    model,
    config: CONFIG,
    callbacks: {
      onmessage: (m) => collector.onmessage(m),
      onerror: (e) => collector.onerror(e),
      onclose: (e) => collector.onclose(e),
    },
  });
  const session = await withTimeout(
    Promise.race([connecting, collector.failed]),
    STEP_TIMEOUT_MS,
    "setupComplete",
  );
  try {
    session.sendClientContent({
      turns: [{ role: "user", parts: [{ text: "What is the capital of France?" }] }],
      turnComplete: true,
    });
    const first = await withTimeout(collector.nextTurn(), STEP_TIMEOUT_MS, "the first turn");
    session.sendRealtimeInput({ text: "And of Italy?" });
    const second = await withTimeout(collector.nextTurn(), STEP_TIMEOUT_MS, "the second turn");
    return {
      setupComplete: true,
      turns: [summarizeTurn(first), summarizeTurn(second)],
    };
  } finally {
    session.close();
  }
}

// A model the server does not have: the server accepts the socket, reads the setup and closes it
// with a policy code. `connect` waits for setupComplete, which never comes, so it never settles;
// the close event is what tells the caller.
async function unknownModel(ai) {
  let settled = "pending";
  const closed = new Promise((resolve, reject) => {
    const connecting = ai.live.connect({
      model: "no-such-model",
      config: CONFIG,
      callbacks: {
        onmessage: () => {},
        onerror: () => {},
        onclose: (e) => resolve({ code: e.code, reason: String(e.reason ?? "") }),
      },
    });
    connecting.then(
      (session) => {
        settled = "resolved";
        session.close();
      },
      (err) => {
        settled = "rejected";
        reject(err);
      },
    );
  });
  const close = await withTimeout(closed, STEP_TIMEOUT_MS, "the close of an unknown model");
  return { ...close, connect: settled };
}

async function main() {
  const baseUrl = requireEnv("FLASHLIVE_BASE_URL");
  const model = requireEnv("FLASHLIVE_MODEL");
  const ai = new GoogleGenAI({ apiKey: "test-key", httpOptions: { baseUrl } });
  const result = {
    conversation: await conversation(ai, model),
    unknownModel: await unknownModel(ai),
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

const overall = setTimeout(() => {
  console.error(`live_sdk.mjs did not finish within ${OVERALL_TIMEOUT_MS} ms`);
  process.exit(1);
}, OVERALL_TIMEOUT_MS);
overall.unref();

try {
  await main();
  process.exit(0);
} catch (err) {
  console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exit(1);
}
