/**
 * Typed client for the Stock Copilot API: HTTP through openapi-fetch with the types generated
 * from the app's OpenAPI document (src/openapi.d.ts), and the WebSocket message types generated
 * from docs/asyncapi.yaml (src/asyncapi.d.ts). Regenerate both with `make client`.
 */
import createClient, { type Client, type ClientOptions } from "openapi-fetch";

import type { components as wsComponents } from "./asyncapi.d.ts";
import type { components, operations, paths } from "./openapi.d.ts";

export type { components, operations, paths };

/** Every schema of the HTTP API, by name: `Schema<"Prediction">`. */
export type Schemas = components["schemas"];
export type Schema<Name extends keyof Schemas> = Schemas[Name];
/** The RFC 9457 problem+json body every error answers with. */
export type Problem = Schema<"Problem">;
export type StockCopilotClient = Client<paths>;

/** Credentials are optional: sign-in and the health routes need none. */
export interface StockCopilotClientOptions extends Omit<ClientOptions, "baseUrl"> {
  /** An access token, or a function giving the current one (so a refreshed token is used). */
  accessToken?: string | (() => string | undefined | Promise<string | undefined>);
  /** A scoped API key (`sck_...`), sent as `X-API-Key`. */
  apiKey?: string;
}

/** An openapi-fetch client for the API at `baseUrl` (e.g. `https://api.example.com`). */
export function createStockCopilotClient(
  baseUrl: string,
  options: StockCopilotClientOptions = {},
): StockCopilotClient {
  const { accessToken, apiKey, ...rest } = options;
  const client = createClient<paths>({ ...rest, baseUrl: baseUrl.replace(/\/+$/, "") });
  if (accessToken !== undefined || apiKey !== undefined) {
    client.use({
      async onRequest({ request }) {
        const token = typeof accessToken === "function" ? await accessToken() : accessToken;
        // A header set on the call itself wins over the client's credentials.
        if (token && !request.headers.has("Authorization")) {
          request.headers.set("Authorization", `Bearer ${token}`);
        }
        if (apiKey && !request.headers.has("X-API-Key")) {
          request.headers.set("X-API-Key", apiKey);
        }
        return request;
      },
    });
  }
  return client;
}

// --- WebSockets (docs/asyncapi.yaml) ---

/** Every WebSocket message schema, by its AsyncAPI message name: `WsMessage<"prediction">`. */
export type WsMessages = wsComponents["schemas"];
export type WsMessage<Name extends keyof WsMessages> = WsMessages[Name];

/** What each stream's socket sends (`server`) and accepts (`client`). */
export interface WsStreams {
  "real-time": {
    server: WsMessages["RealTimeServerMessage"];
    client: WsMessages["RealTimeClientMessage"];
  };
  predictions: {
    server: WsMessages["PredictionsServerMessage"];
    client: WsMessages["PredictionsClientMessage"];
  };
  notifications: {
    server: WsMessages["NotificationsServerMessage"];
    client: WsMessages["NotificationsClientMessage"];
  };
}
export type WsStream = keyof WsStreams;
export type WsServerMessage<S extends WsStream> = WsStreams[S]["server"];
export type WsClientMessage<S extends WsStream> = WsStreams[S]["client"];

/** The socket URL of `stream` on the API at `baseUrl` (http → ws, https → wss). Prefer sending
 *  `{action: "auth", token}` first over `token` here: query strings end up in proxy logs. */
export function webSocketUrl(baseUrl: string, stream: WsStream, token?: string): string {
  const url = new URL(`/ws/${stream}`, baseUrl);
  url.protocol = url.protocol === "https:" ? "wss:" : url.protocol === "http:" ? "ws:" : url.protocol;
  if (token !== undefined) url.searchParams.set("token", token);
  return url.toString();
}

/** A message received on `stream`'s socket, or null when it is not a JSON object with a string
 *  `type`. Narrow the result on `type`; the fields are trusted to match docs/asyncapi.yaml. */
export function parseServerMessage<S extends WsStream>(
  _stream: S,
  data: unknown,
): WsServerMessage<S> | null {
  if (typeof data !== "string") return null;
  let message: unknown;
  try {
    message = JSON.parse(data);
  } catch {
    return null;
  }
  if (typeof message !== "object" || message === null || Array.isArray(message)) return null;
  if (typeof (message as { type?: unknown }).type !== "string") return null;
  return message as WsServerMessage<S>;
}

/** Send a message `stream`'s socket accepts (the type checks it against the AsyncAPI schema). */
export function sendClientMessage<S extends WsStream>(
  socket: WebSocket,
  _stream: S,
  message: WsClientMessage<S>,
): void {
  socket.send(JSON.stringify(message));
}
