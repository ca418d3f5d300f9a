// Drives flashlive's REST API with the official @google/genai SDK and reports what it saw.
//
// Env: FLASHLIVE_BASE_URL (e.g. http://127.0.0.1:8080) and FLASHLIVE_MODEL.
// Prints one JSON line to stdout and exits 0; on any unexpected error prints it to stderr, exits 1.

import { ApiError, GoogleGenAI } from "@google/genai";

const GENERATION_CONFIG = { maxOutputTokens: 24, temperature: 0 };

function requireEnv(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`environment variable ${name} is required`);
  }
  return value;
}

function firstCandidate(response) {
  return response.candidates?.[0];
}

async function generate(ai, model) {
  const response = await ai.models.generateContent({
    model,
    contents: "What is the capital of France?",
    config: GENERATION_CONFIG,
  });
  return {
    text: response.text ?? "",
    finishReason: firstCandidate(response)?.finishReason ?? null,
    usage: response.usageMetadata ?? null,
  };
}

async function stream(ai, model) {
  const responses = await ai.models.generateContentStream({
    model,
    contents: "Name three colors.",
    config: GENERATION_CONFIG,
  });
  const chunks = [];
  const finishReasons = [];
  let last = null;
  for await (const chunk of responses) {
    chunks.push(chunk.text ?? "");
    finishReasons.push(firstCandidate(chunk)?.finishReason ?? null);
    last = chunk;
  }
  return {
    chunks,
    finishReasons,
    finishReason: finishReasons.at(-1) ?? null,
    usage: last?.usageMetadata ?? null,
  };
}

async function notFound(ai) {
  try {
    await ai.models.generateContent({
      model: "no-such-model",
      contents: "Hello?",
      config: GENERATION_CONFIG,
    });
  } catch (err) {
    if (err instanceof ApiError) {
      return { status: err.status, message: err.message };
    }
    throw err;
  }
  throw new Error('generateContent with model "no-such-model" unexpectedly succeeded');
}

async function main() {
  const baseUrl = requireEnv("FLASHLIVE_BASE_URL");
  const model = requireEnv("FLASHLIVE_MODEL");
  const ai = new GoogleGenAI({ apiKey: "test-key", httpOptions: { baseUrl } });
  const result = {
    generate: await generate(ai, model),
    stream: await stream(ai, model),
    notFound: await notFound(ai),
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

try {
  await main();
} catch (err) {
  console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exit(1);
}
