// A tiny local news API for the declarative example (docs/declarative.md): GET /v2/everything with
// ?apiKey=demo-key&from=&to=&page=&pageSize=, like the public News API. Node standard library only.
//
//   node examples/declarative/api.mjs            # listens on 127.0.0.1:8787 (PORT to change)
import { createServer } from 'node:http';

const port = Number(process.env.PORT ?? 8787);
const topics = ['pgvector', 'embeddings', 'chunking', 'Airbyte manifests', 'exactly-once sync', 'RAG'];
const articles = [];
for (let day = 0; day < 30; day++) {
  for (let i = 0; i < 2; i++) {
    const topic = topics[(day + i) % topics.length];
    const at = new Date(Date.UTC(2024, 0, 1 + day, 8 + i * 6)).toISOString().replace('.000Z', 'Z');
    articles.push({
      url: `https://news.example/${day}-${i}`,
      title: `${topic}: notes from day ${day + 1}`,
      description: `A short article about ${topic}, published on day ${day + 1} of January 2024.`,
      publishedAt: at,
    });
  }
}

createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://localhost');
  const send = (status, body, headers = {}) => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };
  if (url.pathname !== '/v2/everything') return send(404, { status: 'error', code: 'notFound' });
  if (url.searchParams.get('apiKey') !== 'demo-key') return send(401, { status: 'error', code: 'apiKeyInvalid' });
  const from = Date.parse(url.searchParams.get('from') ?? '1970-01-01T00:00:00Z');
  const to = Date.parse(url.searchParams.get('to') ?? '2100-01-01T00:00:00Z');
  const page = Number(url.searchParams.get('page') ?? 1);
  const size = Number(url.searchParams.get('pageSize') ?? 20);
  const hits = articles.filter((a) => Date.parse(a.publishedAt) >= from && Date.parse(a.publishedAt) <= to);
  send(200, { status: 'ok', totalResults: hits.length, articles: hits.slice((page - 1) * size, page * size) });
}).listen(port, '127.0.0.1', () => console.log(`news API on http://127.0.0.1:${port}/v2/everything (key: demo-key)`));
