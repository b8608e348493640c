/**
 * Public API of the identity module: API keys, identities, certificates.
 */

export { type ApiKey, type ApiKeyCurve, type EcdsaCurve, parseApiKey, apiKeyFromSeed, generateApiKey } from './api-key.js';
export {
  type CertificateInput,
  IDENTITY_PREFIX,
  IDENTITY_LENGTH,
  identityFromSpki,
  identityOfPublicKey,
  identityOfCertificate,
  spkiOfCertificate,
  kesIdentity,
  isIdentity,
  isIdentityOrEmpty,
  parseIdentity,
} from './identity.js';
export {
  type CertificateOptions,
  type CertificateExtension,
  type KeyUsage,
  type ExtKeyUsage,
  createCertificate,
  readCertificateExtensions,
  ipAddressBytes,
  toPem,
} from './x509.js';
export {
  type PemCertificate,
  type ServerCertificateOptions,
  type CertificateAuthority,
  type IssueOptions,
  type IssuedCertificate,
  API_KEY_CERTIFICATE_DAYS,
  certificateForApiKey,
  createSelfSignedServerCertificate,
  createCertificateAuthority,
  issueCertificate,
} from './client-cert.js';
export { encodeBase64Url, decodeBase64UrlStrict } from './base64url.js';
