import type { ServerResponse } from 'node:http';

// One place writes small HTTP answers, so the dashboard's API and the sweep's trial-file routes
// give the same headers (an exact Content-Length lets a client tell a cut answer from a whole
// one) and both leave the body out of a HEAD answer.

export function replyJson(res: ServerResponse, status: number, body: unknown): true {
  return reply(res, status, 'application/json; charset=utf-8', JSON.stringify(body));
}

export function replyText(res: ServerResponse, status: number, message: string): true {
  return reply(res, status, 'text/plain; charset=utf-8', `${message}\n`);
}

function reply(res: ServerResponse, status: number, type: string, text: string): true {
  const bytes = Buffer.from(text);
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': bytes.byteLength });
  res.end(res.req.method === 'HEAD' ? undefined : bytes);
  return true;
}
