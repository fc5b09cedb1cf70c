export { AgentLink, AgentRequestError } from "./agent-link.js";
export { StdioBridgeConnector, UnixSocketConnector, VsockSocatConnector, connectorFor, type AgentConnector } from "./connectors.js";
export { checkSshHostKey } from "./ssh-host-key.js";
export type { AgentHello, EgressSample, QuoteReply, Ready, SetupParams } from "../../shared/protocol/messages.js";
