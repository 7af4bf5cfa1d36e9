// Registers one device with Microsoft's Node device SDK over HTTPS, as a device would:
//   node dps_register.js HOST:PORT ID_SCOPE REGISTRATION_ID SYMMETRIC_KEY CA_PEM [PAYLOAD_JSON]
// and prints the registration result (JSON) or the error. The SDK is used unmodified; the only setting is the
// CA to trust and an https.Agent that connects to the port (the SDK gives its host to https.request, which takes
// no port in it: a real DPS listens on 443).
'use strict';
const fs = require('fs');
const https = require('https');
const tls = require('tls');
const { Http: HttpBase } = require('azure-iot-http-base');
const { Http } = require('azure-iot-provisioning-device-http');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');

const [hostPort, idScope, registrationId, key, caPath, payload] = process.argv.slice(2);
const [host, port] = hostPort.split(':');
const ca = fs.readFileSync(caPath);
const agent = new https.Agent({ ca });
agent.createConnection = (options, callback) => tls.connect({ ...options, host, port: Number(port), ca, servername: undefined }, callback);
const base = new HttpBase();
base.setOptions({ ca: ca.toString(), http: { agent } });
const transport = new Http(base);
transport.setTransportOptions({ pollingInterval: 100 });
const security = new SymmetricKeySecurityClient(registrationId, key);
const client = ProvisioningDeviceClient.create(hostPort, idScope, transport, security);
if (payload) client.setProvisioningPayload(JSON.parse(payload));
client.register((err, result) => {
  if (err) {
    console.log(JSON.stringify({ error: String(err), name: err.name, status: err.response && err.response.statusCode }));
    process.exit(1);
  }
  console.log(JSON.stringify(result));
});
