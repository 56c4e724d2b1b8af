/**
 * Sign in, read a forecast over HTTP, then wait for the same forecast on the predictions socket.
 *
 *   STOCKCOPILOT_URL=http://127.0.0.1:8000 STOCKCOPILOT_EMAIL=jane@example.com \
 *   STOCKCOPILOT_PASSWORD='correct horse battery staple' node --experimental-strip-types examples/example.ts
 *
 * (Node 22.6+: Node 22+ has a global WebSocket; in a browser the same code runs as it is.)
 */
import {
  createStockCopilotClient,
  parseServerMessage,
  sendClientMessage,
  webSocketUrl,
  type Problem,
  type Schema,
  type WsMessage,
} from "../src/index.ts";

const baseUrl = process.env.STOCKCOPILOT_URL ?? "http://127.0.0.1:8000";
const email = process.env.STOCKCOPILOT_EMAIL ?? "jane@example.com";
const password = process.env.STOCKCOPILOT_PASSWORD ?? "correct horse battery staple";
const ticker = process.env.STOCKCOPILOT_TICKER ?? "AAPL";
const SOCKET_DEADLINE_MS = 30_000;

function failure(what: string, problem: Problem): Error {
  return new Error(`${what}: ${problem.status} ${problem.code}: ${problem.detail}`);
}

async function signIn(): Promise<string> {
  const api = createStockCopilotClient(baseUrl);
  const { data, error } = await api.POST("/api/v1/auth/login", { body: { email, password } });
  if (error) throw failure("sign-in failed", error);
  return data.access_token;
}

async function readPrediction(token: string): Promise<Schema<"Prediction">> {
  const api = createStockCopilotClient(baseUrl, { accessToken: token });
  const { data, error } = await api.GET("/api/v1/predictions/{ticker}", {
    params: { path: { ticker }, query: { horizon: 5 } },
  });
  if (error) throw failure(`no prediction for ${ticker}`, error);
  return data;
}

/** The first forecast the socket pushes after subscribing (it sends one straight away). */
function nextPushedPrediction(token: string): Promise<WsMessage<"prediction">> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(webSocketUrl(baseUrl, "predictions"));
    const deadline = setTimeout(() => {
      socket.close();
      reject(new Error(`no prediction within ${SOCKET_DEADLINE_MS} ms`));
    }, SOCKET_DEADLINE_MS);
    const finish = (outcome: () => void): void => {
      clearTimeout(deadline);
      socket.onclose = null; // settled: our own close is no failure
      socket.close();
      outcome();
    };
    // Credentials as the first message rather than `?token=`, which proxies would log.
    socket.onopen = () => sendClientMessage(socket, "predictions", { action: "auth", token });
    socket.onclose = (event) =>
      finish(() => reject(new Error(`socket closed: ${event.code} ${event.reason}`)));
    socket.onmessage = (event) => {
      const message = parseServerMessage("predictions", event.data);
      switch (message?.type) {
        case "welcome":
          sendClientMessage(socket, "predictions", {
            action: "subscribe",
            tickers: [ticker],
            horizon: 5,
          });
          break;
        case "prediction":
          finish(() => resolve(message));
          break;
        case "error":
          finish(() => reject(new Error(`socket error ${message.code}: ${message.detail}`)));
          break;
        default: // subscribed, heartbeat, pong: nothing to do
      }
    };
  });
}

const token = await signIn();
const prediction = await readPrediction(token);
const { p10, p50, p90 } = prediction.quantiles;
console.log(
  `${prediction.ticker} in ${prediction.horizon} trading days from ${prediction.as_of}: ` +
    `${p50.toFixed(2)} (80% band ${p10.toFixed(2)}–${p90.toFixed(2)}), ` +
    `P(up) ${(prediction.prob_up * 100).toFixed(0)}%, model ${prediction.model.family} ` +
    `v${prediction.model.version}`,
);
const pushed = await nextPushedPrediction(token);
console.log(`pushed: ${pushed.ticker} p50 ${pushed.quantiles?.p50} (as of ${pushed.as_of})`);
