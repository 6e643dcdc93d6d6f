// Troupe's HTTP API under the official openai SDK (version pinned in package-lock.json).
// Run by tests/http_api_test.cpp against a real `troupe serve`, with:
//   TROUPE_URL      the API's base URL (http://127.0.0.1:PORT/v1)
//   TROUPE_KEY      an accepted API key; TROUPE_LIMITED_KEY one whose tenant runs one job at a time
//   TROUPE_MODEL    the served model's name
//   TROUPE_EXPECT   JSON {prompt, max_tokens, text, ids}: `troupe generate`'s greedy answer
//   TROUPE_STOP     JSON {stop, text}: a stop string spanning several tokens of that answer and
//                   the text before it
import { test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";

const baseURL = process.env.TROUPE_URL;
const model = process.env.TROUPE_MODEL;
const expect = JSON.parse(process.env.TROUPE_EXPECT);
const stop = JSON.parse(process.env.TROUPE_STOP);
const client = new OpenAI({ baseURL, apiKey: process.env.TROUPE_KEY, maxRetries: 0 });
const greedy = { model, prompt: expect.prompt, max_tokens: expect.max_tokens, temperature: 0 };

test("a completion equals troupe generate's greedy answer", async () => {
  const r = await client.completions.create(greedy);
  assert.equal(r.object, "text_completion");
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].text, expect.text);
  assert.equal(r.choices[0].finish_reason, "length");
  assert.equal(r.usage.completion_tokens, expect.max_tokens);
  assert.ok(r.usage.prompt_tokens > 0);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

test("a streamed completion says the same, and ends without a usage chunk unless asked", async () => {
  const stream = await client.completions.create({ ...greedy, stream: true });
  let text = "";
  let finish = null;
  let chunks = 0;
  for await (const c of stream) {
    ++chunks;
    assert.equal(c.object, "text_completion");
    assert.equal(c.usage ?? null, null);
    assert.equal(c.choices.length, 1);
    text += c.choices[0].text;
    if (c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
  }
  assert.equal(text, expect.text);
  assert.equal(finish, "length");
  assert.ok(chunks > 2, `only ${chunks} chunks: not streamed`);
});

test("stream_options.include_usage adds a last chunk with the usage and no choices", async () => {
  const stream = await client.completions.create({ ...greedy, stream: true, stream_options: { include_usage: true } });
  const all = [];
  for await (const c of stream) all.push(c);
  const last = all[all.length - 1];
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, expect.max_tokens);
  for (const c of all.slice(0, -1)) assert.equal(c.usage, null);
});

test("n = 2 gives two choices, each the whole answer", async () => {
  const r = await client.completions.create({ ...greedy, n: 2 });
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1]);
  for (const c of r.choices) assert.equal(c.text, expect.text);
  assert.equal(r.usage.completion_tokens, 2 * expect.max_tokens);
});

test("n = 2 with sampling and a seed gives reproducible independent choices", async () => {
  const req = { ...greedy, n: 2, temperature: 1.0, seed: 7, max_tokens: 24 };
  const a = await client.completions.create(req);
  const b = await client.completions.create(req);
  assert.deepEqual(a.choices.map((c) => c.text), b.choices.map((c) => c.text));
});

test("logprobs: one per token, with the alternatives asked for", async () => {
  const r = await client.completions.create({ ...greedy, logprobs: 2 });
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, expect.max_tokens);
  assert.equal(lp.token_logprobs.length, expect.max_tokens);
  assert.equal(lp.tokens.join(""), expect.text);
  for (let i = 0; i < lp.tokens.length; ++i) {
    assert.ok(lp.token_logprobs[i] <= 0);
    assert.equal(Object.keys(lp.top_logprobs[i]).length, 2);
    assert.ok(lp.tokens[i] in lp.top_logprobs[i], "greedy: the chosen token is among the top 2");
  }
});

test("a stop string spanning tokens ends the text before it, streamed or not, never retracted", async () => {
  const r = await client.completions.create({ ...greedy, stop: stop.stop });
  assert.equal(r.choices[0].text, stop.text);
  assert.equal(r.choices[0].finish_reason, "stop");
  const stream = await client.completions.create({ ...greedy, stop: [stop.stop], stream: true });
  let text = "";
  for await (const c of stream) {
    text += c.choices[0]?.text ?? "";
    assert.ok(stop.text.startsWith(text), `streamed ${JSON.stringify(text)}, not a prefix of the answer`);
  }
  assert.equal(text, stop.text);
});

test("logit_bias steers the choice: the greedy first token at -100 is never taken", async () => {
  const r = await client.completions.create({ ...greedy, max_tokens: 1, logprobs: 1, logit_bias: { [expect.ids[0]]: -100 } });
  assert.notEqual(r.choices[0].text, "");
  assert.ok(!expect.text.startsWith(r.choices[0].text), `${JSON.stringify(r.choices[0].text)} is still the greedy token`);
});

test("echo puts the prompt before the text", async () => {
  const r = await client.completions.create({ ...greedy, echo: true });
  assert.equal(r.choices[0].text, expect.prompt + expect.text);
});

test("a list of prompts gives one choice per prompt, in order", async () => {
  const r = await client.completions.create({ ...greedy, prompt: [expect.prompt, expect.prompt] });
  assert.equal(r.choices.length, 2);
  for (const c of r.choices) assert.equal(c.text, expect.text);
});

test("/v1/models lists the model; /v1/models/{id} finds it", async () => {
  const list = await client.models.list();
  assert.ok(list.data.some((m) => m.id === model));
  const m = await client.models.retrieve(model);
  assert.equal(m.id, model);
});

test("errors map to the SDK's classes", async () => {
  await assert.rejects(client.completions.create({ ...greedy, model: "no-such-model" }), (e) => {
    assert.ok(e instanceof OpenAI.NotFoundError, e.constructor.name);
    assert.equal(e.status, 404);
    return true;
  });
  await assert.rejects(client.models.retrieve("no-such-model"), OpenAI.NotFoundError);
  await assert.rejects(client.completions.create({ ...greedy, temperature: 5 }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, e.constructor.name);
    assert.equal(e.param, "temperature");
    assert.match(e.message, /temperature/);
    return true;
  });
  await assert.rejects(client.completions.create({ ...greedy, tools: [{ type: "function" }] }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError);
    assert.equal(e.param, "tools");
    return true;
  });
  const long = "Once upon a time ".repeat(60);
  await assert.rejects(client.completions.create({ ...greedy, prompt: long }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError);
    assert.match(e.message, /tokens does not fit the context of \d+ tokens/);
    return true;
  });
  const stranger = new OpenAI({ baseURL, apiKey: "sk-wrong", maxRetries: 0 });
  await assert.rejects(stranger.completions.create(greedy), OpenAI.AuthenticationError);
  await assert.rejects(stranger.models.list(), OpenAI.AuthenticationError);
});

test("a tenant over its limit gets RateLimitError with retry-after", async () => {
  const limited = new OpenAI({ baseURL, apiKey: process.env.TROUPE_LIMITED_KEY, maxRetries: 0 });
  const jobs = [];
  for (let i = 0; i < 6; ++i)
    jobs.push(limited.completions.create({ ...greedy, max_tokens: 100, ignore_eos: true }).then(() => null, (e) => e));
  const errors = (await Promise.all(jobs)).filter((e) => e);
  assert.ok(errors.length > 0, "six concurrent jobs of a one-at-a-time tenant all ran");
  for (const e of errors) {
    assert.ok(e instanceof OpenAI.RateLimitError, `${e.constructor.name}: ${e.message}`);
    assert.ok(Number(e.headers.get("retry-after")) > 0);
  }
});

// A model with a real chat template (troupe model synth --tokenizer: the Llama 3 vocabulary
// and template, random weights): the chat API's shapes.
const chatURL = process.env.TROUPE_CHAT_URL;
const chatModel = process.env.TROUPE_CHAT_MODEL;
test("chat completions, whole and streamed with usage, in OpenAI's shapes", { skip: !chatURL }, async () => {
  const chat = new OpenAI({ baseURL: chatURL, apiKey: "none", maxRetries: 0 });
  const messages = [
    { role: "system", content: "You are terse." },
    { role: "user", content: "Say hello." },
  ];
  const r = await chat.chat.completions.create({ model: chatModel, messages, max_tokens: 6, temperature: 0 });
  assert.equal(r.object, "chat.completion");
  assert.equal(r.choices[0].message.role, "assistant");
  assert.equal(typeof r.choices[0].message.content, "string");
  assert.ok(["length", "stop"].includes(r.choices[0].finish_reason));
  assert.ok(r.usage.prompt_tokens > 10);
  const stream = await chat.chat.completions.create({
    model: chatModel, messages, max_tokens: 6, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  let text = "";
  let role = null;
  let usage = null;
  for await (const c of stream) {
    assert.equal(c.object, "chat.completion.chunk");
    if (c.choices.length === 0) usage = c.usage;
    for (const ch of c.choices) {
      if (ch.delta.role) role = ch.delta.role;
      text += ch.delta.content ?? "";
    }
  }
  assert.equal(role, "assistant");
  assert.equal(text, r.choices[0].message.content, "streamed and whole greedy answers differ");
  assert.equal(usage.completion_tokens, r.usage.completion_tokens);
  const lp = await chat.chat.completions.create({ model: chatModel, messages, max_tokens: 3, temperature: 0, logprobs: true, top_logprobs: 2 });
  assert.equal(lp.choices[0].logprobs.content.length, lp.usage.completion_tokens);
  for (const t of lp.choices[0].logprobs.content) assert.equal(t.top_logprobs.length, 2);
  await assert.rejects(chat.chat.completions.create({ model: chatModel, messages: [] }), OpenAI.BadRequestError);
});
