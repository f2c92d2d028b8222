// Test OpenID Connect provider (panva/oidc-provider v9) on loopback: SCS Edge's stand-in for the
// central Keycloak in integration tests (README.md). Adapted from shared/reference/oidc-idp.
//   node idp.mjs               start the provider
//   node idp.mjs keys new      write a fresh key set (old tokens stop verifying)
//   node idp.mjs keys rotate   new keys sign, previous keys stay published in the JWKS
// Env: PORT (9400), ISSUER (http://127.0.0.1:$PORT, e.g. .../realms/scs-edge),
//      IDP_CONFIG (./idp-config.json), KEYS_FILE (./state/jwks.json)
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

const here = path.dirname(new URL(import.meta.url).pathname);
const PORT = Number(process.env.PORT || (process.env.ISSUER && new URL(process.env.ISSUER).port) || 9400);
const ISSUER = (process.env.ISSUER || `http://127.0.0.1:${PORT}`).replace(/\/$/, '');
const PREFIX = new URL(ISSUER).pathname.replace(/\/$/, ''); // '' or e.g. '/realms/scs'
const KEYS_FILE = process.env.KEYS_FILE || path.join(here, 'state', 'jwks.json');
const cfg = JSON.parse(fs.readFileSync(process.env.IDP_CONFIG || path.join(here, 'idp-config.json'), 'utf8'));

// ---- keys: private JWKS on disk; the first key of each alg signs -------------------
function newKeys() {
  const tag = crypto.randomBytes(4).toString('hex');
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  return [
    { ...rsa.export({ format: 'jwk' }), kid: `rs256-${tag}`, alg: 'RS256', use: 'sig' },
    { ...ec.export({ format: 'jwk' }), kid: `es256-${tag}`, alg: 'ES256', use: 'sig' },
  ];
}
function writeKeys(keys) {
  fs.mkdirSync(path.dirname(KEYS_FILE), { recursive: true });
  fs.writeFileSync(KEYS_FILE, JSON.stringify({ keys }, null, 1), { mode: 0o600 });
  console.log(`${KEYS_FILE}: ${keys.map((k) => k.kid).join(', ')}`);
}
if (process.argv[2] === 'keys') {
  const old = fs.existsSync(KEYS_FILE) ? JSON.parse(fs.readFileSync(KEYS_FILE)).keys : [];
  const fresh = newKeys();
  writeKeys(process.argv[3] === 'rotate' ? [...fresh, ...old.slice(0, fresh.length)] : fresh);
  process.exit(0);
}
if (!fs.existsSync(KEYS_FILE)) writeKeys(newKeys());
const { default: Provider, errors } = await import('oidc-provider'); // after `keys`: no start-up warnings there
const jwks = JSON.parse(fs.readFileSync(KEYS_FILE, 'utf8'));

// ---- clients, users, resource servers (audiences) from idp-config.json --------------
const extras = new Map(); // client_id -> { groups, claims, loopbackAnyPort } (not oidc-provider metadata)
const clients = cfg.clients.map(({ groups, claims, loopback_any_port: loopbackAnyPort, ...metadata }) => {
  extras.set(metadata.client_id, { groups, claims, loopbackAnyPort });
  return metadata;
});
const userBySub = new Map(cfg.users.map((u) => [u.sub, u]));
const login = (username, password) => cfg.users.find((u) => u.username === username && u.password === password);

function resourceServerInfo(ctx, indicator) {
  const r = cfg.resources[indicator];
  if (!r) throw new errors.InvalidTarget(`unknown resource ${indicator}`);
  return {
    audience: r.audience ?? indicator, // value of the "aud" claim
    scope: r.scope ?? '',
    accessTokenTTL: r.ttl ?? 300,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: r.alg ?? 'RS256' } },
  };
}

// Keycloak-like claims: sub, preferred_username, groups, azp, typ + free-form "claims".
function userClaims(user) {
  return { preferred_username: user.username, groups: user.groups ?? [], ...user.claims };
}
function extraTokenClaims(ctx, token) {
  if (token.accountId) return { typ: 'Bearer', azp: token.clientId, ...userClaims(userBySub.get(token.accountId)) };
  const x = extras.get(token.clientId) ?? {};
  return {
    typ: 'Bearer', azp: token.clientId, preferred_username: `service-account-${token.clientId}`,
    groups: x.groups ?? [], ...x.claims,
  };
}

// Keycloak URL layout when the issuer looks like .../realms/NAME
const routes = /\/realms\/[^/]+$/.test(PREFIX) ? {
  authorization: '/protocol/openid-connect/auth',
  token: '/protocol/openid-connect/token',
  jwks: '/protocol/openid-connect/certs',
  userinfo: '/protocol/openid-connect/userinfo',
  end_session: '/protocol/openid-connect/logout',
  revocation: '/protocol/openid-connect/revoke',
} : undefined;

const provider = new Provider(ISSUER, {
  clients,
  jwks,
  routes,
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  claims: { openid: ['sub'], profile: ['preferred_username', 'name'], email: ['email'], groups: ['groups'] },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
  findAccount: (ctx, sub) => (userBySub.has(sub)
    ? { accountId: sub, claims: () => ({ sub, ...userClaims(userBySub.get(sub)) }) }
    : undefined),
  extraTokenClaims,
  // JWT header "typ": RFC 9068 says at+jwt; Keycloak sends JWT (set "jwt_typ": "JWT" in the config)
  formats: { customizers: { jwt: (ctx, token, jwt) => { jwt.header = { typ: cfg.jwt_typ ?? 'at+jwt' }; } } },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (ctx, client, oneOf) => oneOf ?? cfg.default_resource,
      useGrantedResource: () => true,
      getResourceServerInfo: resourceServerInfo,
    },
  },
  interactions: { url: (ctx, interaction) => `${PREFIX}/interaction/${interaction.uid}` },
  issueRefreshToken: (ctx, client) => client.grantTypeAllowed('refresh_token'),
  ttl: {
    AccessToken: (ctx, t) => t.resourceServer?.accessTokenTTL ?? 300,
    ClientCredentials: (ctx, t) => t.resourceServer?.accessTokenTTL ?? 300,
    AuthorizationCode: 60, IdToken: 300, RefreshToken: 3600,
    Interaction: 600, Session: 3600, Grant: 3600,
  },
});

// ---- loopback redirect URIs on any port (RFC 8252 §7.3) for "loopback_any_port" clients ----
// The region under test listens on a port chosen at run time, so such a client registers its
// loopback redirect URIs without a port and a request's URI matches whatever its port. oidc-provider
// does this itself only for native clients and only over http; the dashboard is a web client on https.
const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost']);
function withoutLoopbackPort(uri) {
  const url = URL.parse(uri);
  if (!url || !['http:', 'https:'].includes(url.protocol) || !LOOPBACK_HOSTS.has(url.hostname)) return undefined;
  url.port = '';
  return url.href;
}
for (const [method, registered] of [['redirectUriAllowed', 'redirectUris'], ['postLogoutRedirectUriAllowed', 'postLogoutRedirectUris']]) {
  const exact = provider.Client.prototype[method];
  provider.Client.prototype[method] = function allowed(value) {
    if (exact.call(this, value)) return true;
    if (!extras.get(this.clientId)?.loopbackAnyPort) return false;
    const portless = withoutLoopbackPort(value);
    return portless !== undefined && (this[registered] ?? []).some((uri) => withoutLoopbackPort(uri) === portless);
  };
}

// ---- "password" grant (Keycloak "Direct Access Grants"), not built into oidc-provider -
provider.registerGrantType('password', async (ctx) => {
  const { username, password, scope = '', resource = cfg.default_resource } = ctx.oidc.params;
  const user = login(username, password);
  if (!user) throw new errors.InvalidGrant('invalid user credentials');
  const rs = new provider.ResourceServer(resource, resourceServerInfo(ctx, resource));
  const token = new provider.AccessToken({
    accountId: user.sub, client: ctx.oidc.client, gty: 'password', resourceServer: rs,
    scope: scope.split(' ').filter((s) => rs.scopes.has(s)).join(' ') || undefined,
  });
  ctx.body = { access_token: await token.save(), token_type: 'Bearer', expires_in: token.expiration, scope: token.scope };
}, ['username', 'password', 'scope', 'resource']);

// ---- tiny login page for the authorization-code flow (logs in + consents at once) ---
async function readBody(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return body;
}
provider.use(async (ctx, next) => {
  if (!/^\/interaction\/[^/]+$/.test(ctx.path)) return next();
  const { params } = await provider.interactionDetails(ctx.req, ctx.res);
  if (ctx.method === 'GET') {
    ctx.type = 'html';
    ctx.body = `<form method="post"><input name="username"><input name="password" type="password"><button>Sign in</button></form>`;
    return undefined;
  }
  const form = Object.fromEntries(new URLSearchParams(await readBody(ctx.req)));
  const user = login(form.username, form.password);
  if (!user) {
    return provider.interactionFinished(ctx.req, ctx.res, { error: 'access_denied', error_description: 'invalid user credentials' });
  }
  const grant = new provider.Grant({ accountId: user.sub, clientId: params.client_id });
  grant.addOIDCScope(params.scope);
  const resource = params.resource ?? cfg.default_resource;
  grant.addResourceScope(resource, cfg.resources[resource]?.scope ?? '');
  const result = { login: { accountId: user.sub }, consent: { grantId: await grant.save() } };
  return provider.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
});

// ---- POST <issuer>/test/mint: sign arbitrary claims for negative tests --------------
// body: {"claims": {...overrides, null deletes}, "ttl": -60, "alg": "ES256", "untrusted": true}
provider.use(async (ctx, next) => {
  if (ctx.path !== '/test/mint' || ctx.method !== 'POST') return next();
  const { claims = {}, ttl = 300, alg = 'RS256', untrusted = false } = JSON.parse(await readBody(ctx.req) || '{}');
  const jwk = jwks.keys.find((k) => k.alg === alg); // current signing key; untrusted: a throw-away key, same kid
  const key = crypto.createPrivateKey({ key: untrusted ? newKeys().find((k) => k.alg === alg) : jwk, format: 'jwk' });
  const now = Math.floor(Date.now() / 1000);
  const payload = {
    iss: ISSUER, aud: resourceServerInfo(ctx, cfg.default_resource).audience, sub: 'minted',
    iat: ttl > 0 ? now : now + ttl - 300, exp: now + ttl, jti: crypto.randomUUID(),
    typ: 'Bearer', azp: 'minted', preferred_username: 'minted', groups: [], ...claims,
  };
  for (const [k, v] of Object.entries(payload)) if (v === null) delete payload[k];
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const input = `${b64({ alg, typ: cfg.jwt_typ ?? 'at+jwt', kid: jwk.kid })}.${b64(payload)}`;
  const sig = crypto.sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  ctx.body = { access_token: `${input}.${sig.toString('base64url')}`, token_type: 'Bearer', claims: payload };
  return undefined;
});

// Plain node http server; strip the issuer path prefix like express' app.use(prefix, ...)
const app = provider.callback();
http.createServer((req, res) => {
  if (PREFIX && !(req.url === PREFIX || req.url.startsWith(`${PREFIX}/`) || req.url.startsWith(`${PREFIX}?`))) {
    res.writeHead(404).end();
    return;
  }
  req.originalUrl = req.url;
  req.url = req.url.slice(PREFIX.length) || '/';
  app(req, res);
}).listen(PORT, '127.0.0.1', () => console.log(`issuer ${ISSUER} listening on 127.0.0.1:${PORT}`));
