/**
 * Trellis's server API: start a server in-process, and the CloudEvents codec it uses.
 * @module
 */
export * from './cloudevents/event.js';
export * from './cloudevents/http.js';
export * from './cloudevents/json-format.js';
export { ERRORS, type ErrorCode, TrellisError } from './errors.js';
export { DEFAULT_CONFIG, type ServerConfig } from './server/config.js';
export { startServer, type TrellisServer } from './server/server.js';
