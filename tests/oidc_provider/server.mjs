// A real OpenID Connect provider for the gateway's single sign-on tests: panva's certified
// oidc-provider with its development interactions (a login form that takes any account name
// and password, then a consent form), on a free loopback port.
//
// Configuration comes as JSON in ZHIKU_TEST_OIDC_CONFIG:
//   {"clients": [{client_id, client_secret, redirect_uris, ...}],
//    "accounts": {"alice": {"email": "...", "name": "...", "groups": ["..."]}},
//    "accountsFile": "/tmp/.../accounts.json", "port": 0}
// With accountsFile the accounts are read from that file at every sign-in instead, so a test
// can change a user's groups at the provider between two sign-ins.
// The provider listens before it is built, so its issuer carries the port it got (the one
// asked for, or one the kernel picked for port 0); the first line on stdout is
// {"issuer": "http://127.0.0.1:<port>"} for the test fixture to read.
import fs from 'node:fs';
import http from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(process.env.ZHIKU_TEST_OIDC_CONFIG || '{}');
const accounts = () => (config.accountsFile
  ? JSON.parse(fs.readFileSync(config.accountsFile, 'utf8'))
  : config.accounts || {});

const server = http.createServer();
server.listen(config.port || 0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: config.clients || [],
    // Any name typed in the development login form signs in as that account; an unknown name
    // fails the login, as a wrong password would at a real provider.
    async findAccount(ctx, sub) {
      const claims = accounts()[sub];
      if (!claims) return undefined;
      return { accountId: sub, async claims() { return { sub, ...claims }; } };
    },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
    cookies: { keys: ['zhiku-test-oidc-provider-cookie-key'] },
    features: { devInteractions: { enabled: true } },
  });
  // Development interactions print a warning per start: the tests know.
  provider.on('server_error', (ctx, error) => console.error('server_error', error));
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
