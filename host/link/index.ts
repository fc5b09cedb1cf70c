export { AgentLink, AgentRequestError, type AgentLinkEvents, type AgentLinkOptions, type LinkState } from "./agent-link.js";
export {
  AGENT_VSOCK_PORT,
  StdioBridgeConnector,
  UnixSocketConnector,
  VsockSocatConnector,
  connectorFor,
  socatVsockConnectArgs,
  type AgentConnector,
  type StdioBridgeOptions,
} from "./connectors.js";
export { checkSshHostKey, type SshHostKeyCheck, type SshHostKeyResult } from "./ssh-host-key.js";
export type {
  AgentHello,
  EgressSample,
  Failed,
  Heartbeat,
  Prepared,
  Progress,
  QuoteReply,
  Ready,
  SetupAck,
  SetupParams,
} from "../../shared/protocol/messages.js";
