// The official OpenAI Node SDK, unmodified, against the gateway (and through it the nodes). One line per check:
// "PASS <name>" or "FAIL <name>: <why>"; the exit code is the number of failures. Run by
// tests/System.Tests/ConformanceTests.cs, which starts the services and sets the environment:
//   CONFORMANCE_BASE_URL  the gateway's /v1          CONFORMANCE_MODEL    the base model id
//   CONFORMANCE_KEY       a tenant key              CONFORMANCE_ADAPTER  an adapter id with '/' (base:tenant/name)
//   CONFORMANCE_LIMITED_KEY  a key whose tenant may send one request per minute (for 429)
import OpenAI from 'openai';

const env = (name) => {
  const v = process.env[name];
  if (!v) { console.log(`FAIL setup: ${name} is not set`); process.exit(100); }
  return v;
};
const baseURL = env('CONFORMANCE_BASE_URL');
const model = env('CONFORMANCE_MODEL');
const adapter = env('CONFORMANCE_ADAPTER');
const client = new OpenAI({ apiKey: env('CONFORMANCE_KEY'), baseURL, maxRetries: 0, timeout: 120_000 });

let failures = 0;
async function check(name, fn) {
  try {
    await fn();
    console.log(`PASS ${name}`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}: ${e?.stack ?? e}`);
  }
}
function assert(cond, message) { if (!cond) throw new Error(message); }
async function expectError(type, status, fn, messagePart) {
  try {
    await fn();
  } catch (e) {
    assert(e instanceof type, `expected ${type.name}, got ${e?.constructor?.name}: ${e?.message}`);
    assert(e.status === status, `expected status ${status}, got ${e.status}`);
    assert(e.error && typeof e.error.message === 'string', `no OpenAI error body: ${e.message}`);
    if (messagePart) assert(e.message.includes(messagePart), `message '${e.message}' does not name '${messagePart}'`);
    return e;
  }
  throw new Error(`expected ${type.name}, the call succeeded`);
}

const weather = {
  type: 'object',
  properties: { city: { type: 'string', maxLength: 8 }, unit: { enum: ['c', 'f'] } },
  required: ['city', 'unit'],
  additionalProperties: false,
};
const tools = [{ type: 'function', function: { name: 'get_weather', parameters: weather } }];
const validWeather = (args) => {
  const a = JSON.parse(args);
  assert(typeof a.city === 'string' && a.city.length <= 8, `city: ${args}`);
  assert(a.unit === 'c' || a.unit === 'f', `unit: ${args}`);
  assert(Object.keys(a).every((k) => k === 'city' || k === 'unit'), `extra keys: ${args}`);
};

await check('models.list has the base and the adapter', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  const name = adapter.split('/').pop();
  assert(ids.includes(model), `no ${model} in ${ids}`);
  assert(ids.some((id) => id.endsWith(name)), `no ${name} in ${ids}`);
});

await check('models.retrieve with / in the id (the SDK sends %2F)', async () => {
  const m = await client.models.retrieve(adapter);
  assert(m.object === 'model', JSON.stringify(m));
});

await check('models.retrieve unknown -> NotFoundError', async () => {
  await expectError(OpenAI.NotFoundError, 404, () => client.models.retrieve(`${model}:nobody/none`));
});

await check('chat.completions.create', async () => {
  const c = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Tell me a fortune' }], max_tokens: 8, temperature: 0 });
  assert(c.object === 'chat.completion' && c.choices[0].message.role === 'assistant', JSON.stringify(c));
  assert(typeof c.choices[0].message.content === 'string' && c.choices[0].message.content.length > 0, 'empty content');
  assert(c.usage.completion_tokens >= 1 && c.usage.completion_tokens <= 8, JSON.stringify(c.usage));
  assert(typeof c._request_id === 'string' && c._request_id.length > 0, 'no x-request-id');
});

await check('x-request-id: the client\'s own is kept', async () => {
  const c = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 }, { headers: { 'X-Request-Id': 'conformance-node-1' } });
  assert(c._request_id === 'conformance-node-1', `got ${c._request_id}`);
});

await check('chat.completions.create stream with usage', async () => {
  const whole = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Stream me a fortune' }], max_tokens: 16, temperature: 0 });
  const stream = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Stream me a fortune' }], max_tokens: 16, temperature: 0, stream: true, stream_options: { include_usage: true } });
  let text = '', chunks = 0, usage = null, finish = null;
  for await (const chunk of stream) {
    chunks++;
    if (chunk.usage) usage = chunk.usage;
    for (const ch of chunk.choices) {
      text += ch.delta.content ?? '';
      finish ??= ch.finish_reason;
    }
  }
  assert(chunks > 2, `${chunks} chunks`);
  assert(text === whole.choices[0].message.content, `streamed '${text}' vs '${whole.choices[0].message.content}'`);
  assert(finish === whole.choices[0].finish_reason, `finish ${finish}`);
  assert(usage && usage.completion_tokens === whole.usage.completion_tokens, JSON.stringify(usage));
});

await check('completions.create and stream', async () => {
  const c = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 8, temperature: 0 });
  assert(c.object === 'text_completion' && typeof c.choices[0].text === 'string', JSON.stringify(c));
  let text = '';
  for await (const chunk of await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 8, temperature: 0, stream: true })) text += chunk.choices[0]?.text ?? '';
  assert(text === c.choices[0].text, `streamed '${text}' vs '${c.choices[0].text}'`);
});

await check('logprobs (chat and completions)', async () => {
  // Sampled answers may end on a stop token, which counts in usage but has no logprobs entry (src/Inference.Node/README.md).
  const logprobTokens = (choice, usage) => usage.completion_tokens - (choice.finish_reason === 'stop' ? 1 : 0);
  const c = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, logprobs: true, top_logprobs: 2 });
  const content = c.choices[0].logprobs.content;
  assert(content.length === logprobTokens(c.choices[0], c.usage), `${content.length} logprobs for ${c.usage.completion_tokens} tokens, finish ${c.choices[0].finish_reason}`);
  assert(content.every((t) => t.logprob <= 0 && t.top_logprobs.length === 2), JSON.stringify(content));
  const p = await client.completions.create({ model, prompt: 'Hello', max_tokens: 3, logprobs: 2 });
  assert(p.choices[0].logprobs.token_logprobs.length === logprobTokens(p.choices[0], p.usage),
    `${JSON.stringify(p.choices[0].logprobs)} for ${p.usage.completion_tokens} tokens, finish ${p.choices[0].finish_reason}`);
});

await check('tool call: required, then the result back, then an answer', async () => {
  const messages = [{ role: 'user', content: 'Weather in Oslo?' }];
  const first = await client.chat.completions.create({ model, messages, tools, tool_choice: 'required', parallel_tool_calls: false, max_tokens: 64, temperature: 0 });
  const choice = first.choices[0];
  assert(choice.finish_reason === 'tool_calls', `finish ${choice.finish_reason}`);
  const call = choice.message.tool_calls[0];
  assert(call.type === 'function' && call.function.name === 'get_weather' && call.id.startsWith('call_'), JSON.stringify(call));
  validWeather(call.function.arguments);
  messages.push(choice.message, { role: 'tool', tool_call_id: call.id, content: '21 degrees' });
  const answer = await client.chat.completions.create({ model, messages, tools, tool_choice: 'none', max_tokens: 8, temperature: 0 });
  assert(!answer.choices[0].message.tool_calls && answer.choices[0].message.content.length > 0, JSON.stringify(answer.choices[0]));
});

await check('tool call streamed: named function, tool_calls deltas', async () => {
  const stream = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Weather in Rome?' }], tools,
    tool_choice: { type: 'function', function: { name: 'get_weather' } }, max_tokens: 48, stream: true,
  });
  let args = '', name = null, id = null, finish = null, content = '';
  for await (const chunk of stream) {
    for (const ch of chunk.choices) {
      content += ch.delta.content ?? '';
      for (const t of ch.delta.tool_calls ?? []) {
        id ??= t.id; name ??= t.function?.name; args += t.function?.arguments ?? '';
      }
      finish ??= ch.finish_reason;
    }
  }
  assert(finish === 'tool_calls' && name === 'get_weather' && id?.startsWith('call_') && content === '', `${finish} ${name} ${id} '${content}'`);
  validWeather(args);
});

await check('tool_choice naming an unknown function -> BadRequestError', async () => {
  await expectError(OpenAI.BadRequestError, 400, () => client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'hi' }], tools, tool_choice: { type: 'function', function: { name: 'nope' } },
  }), 'nope');
});

await check('response_format json_schema', async () => {
  const c = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Describe a city' }], max_tokens: 60, temperature: 1,
    response_format: { type: 'json_schema', json_schema: { name: 'city', strict: true, schema: weather } },
  });
  validWeather(c.choices[0].message.content);
});

await check('aborting a stream', async () => {
  const controller = new AbortController();
  const stream = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Tell me a long story' }], max_tokens: 200, stream: true, ignore_eos: true }, { signal: controller.signal });
  let chunks = 0, aborted = false;
  try {
    for await (const chunk of stream) { if (++chunks === 3) controller.abort(); }
  } catch (e) {
    aborted = e instanceof OpenAI.APIUserAbortError || e?.name === 'AbortError';
    if (!aborted) throw e;
  }
  assert(aborted || chunks < 200, `stream ran to ${chunks} chunks`);
  const after = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'still there?' }], max_tokens: 2 });
  assert(after.choices.length === 1, 'the gateway did not answer after an abort');
});

await check('400 BadRequestError', async () => {
  await expectError(OpenAI.BadRequestError, 400, () => client.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }], max_tokens: -1 }), 'max_tokens');
});

await check('400 unsupported_parameter names the field', async () => {
  const e = await expectError(OpenAI.BadRequestError, 400, () => client.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }], modalities: ['text', 'audio'] }));
  assert(e.code === 'unsupported_parameter' && e.param === 'modalities', `${e.code} ${e.param}`);
});

await check('401 AuthenticationError', async () => {
  const bad = new OpenAI({ apiKey: 'sk-wrong', baseURL, maxRetries: 0 });
  await expectError(OpenAI.AuthenticationError, 401, () => bad.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 }));
});

await check('404 NotFoundError for an unknown model', async () => {
  await expectError(OpenAI.NotFoundError, 404, () => client.chat.completions.create({ model: `${model}:nobody/none`, messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 }));
});

await check('404 NotFoundError with a message for an unsupported route (/v1/embeddings)', async () => {
  await expectError(OpenAI.NotFoundError, 404, () => client.embeddings.create({ model, input: 'hi' }), '/v1/embeddings');
});

await check('429 RateLimitError', async () => {
  const limited = new OpenAI({ apiKey: env('CONFORMANCE_LIMITED_KEY'), baseURL, maxRetries: 0 });
  const send = () => limited.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 });
  let e = null;
  for (let i = 0; i < 3 && !e; i++) {
    try { await send(); } catch (err) { e = err; }
  }
  assert(e instanceof OpenAI.RateLimitError && e.status === 429, `got ${e?.constructor?.name} ${e?.status}`);
});

console.log(`${failures} failed`);
process.exit(failures);
