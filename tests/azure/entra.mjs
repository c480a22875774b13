// The Entra ID tenant of Accord's Azure tests: oauth2-mock-server over HTTPS, with the token
// endpoint where azure_identity looks for it (/{tenant}/oauth2/v2.0/token), RS256 tokens
// published at /jwks, and Entra's shapes: `aud` is the scope's resource, `iss` is
// https://sts.windows.net/{tenant}/ (what Azurite accepts), a wrong client secret is refused
// with AADSTS7000215.
//
// Usage: node entra.mjs <port> <key.pem> <cert.pem> <tenant> <client id> <client secret> <token lifetime s>
// Prints "listening <url>" when ready, then "token <client id> <scope>" for each token issued.
import { OAuth2Server } from "oauth2-mock-server";

const [port, key, cert, tenant, clientId, clientSecret, lifetime] = process.argv.slice(2);
const server = new OAuth2Server(key, cert, {
  endpoints: { token: `/${tenant}/oauth2/v2.0/token` },
});
await server.issuer.keys.generate("RS256");

const field = (req, name) => (req.body && req.body[name]) || "";

server.service.on("beforeTokenSigning", (token, req) => {
  const scope = field(req, "scope");
  const now = Math.floor(Date.now() / 1000);
  token.payload.iss = `https://sts.windows.net/${tenant}/`;
  token.payload.aud = scope.replace(/\/\.default$/, "");
  token.payload.tid = tenant;
  token.payload.appid = field(req, "client_id");
  token.payload.oid = "00000000-0000-0000-0000-0000000000aa";
  token.payload.iat = now;
  token.payload.nbf = now - 1;
  token.payload.exp = now + Number(lifetime);
});

server.service.on("beforeResponse", (response, req) => {
  const id = field(req, "client_id");
  const assertion = field(req, "client_assertion");
  const secretOk = field(req, "client_secret") === clientSecret;
  if (id !== clientId || (!secretOk && !assertion)) {
    response.statusCode = 401;
    response.body = {
      error: "invalid_client",
      error_description: "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value.",
      error_codes: [7000215],
    };
    console.log(`refused ${id}`);
    return;
  }
  response.body.expires_in = Number(lifetime);
  console.log(`token ${id} ${field(req, "scope")}`);
});

await server.start(Number(port), "127.0.0.1");
console.log(`listening ${server.issuer.url}`);
