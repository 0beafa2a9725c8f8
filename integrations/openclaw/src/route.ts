// Where a conversation's replies go: the skillbox task's parent route.
//
// OpenClaw's gateway runs a hook turn in the conversation's session when
// given its session key, but never infers where to deliver that turn's
// reply: a direct `/hooks/agent` request needs an explicit `channel` and
// `to`. The tool context carries the conversation's delivery route; it
// travels with the task so that skillbox's relay can name it.

/** The route of a task's parent conversation, as skillbox stores it. */
export interface ParentRoute {
  channel: string;
  to: string;
  account_id?: string;
}

/** OpenClaw's delivery context of a conversation (the fields used here). */
export interface DeliveryContext {
  channel?: string;
  to?: string;
  accountId?: string;
}

/**
 * OpenClaw's own chat UI (`webchat`): its conversations are the session's
 * transcript, where the hook turn already writes; it is no delivery
 * channel (the gateway refuses it as a hook's `channel`).
 */
const INTERNAL_CHANNEL = "webchat";

/** The parent route of a conversation, if its replies go to a messaging channel. */
export function parentRoute(dc: DeliveryContext | undefined): ParentRoute | undefined {
  const channel = dc?.channel?.trim();
  const to = dc?.to?.trim();
  if (!channel || !to || channel === INTERNAL_CHANNEL) return undefined;
  const account = dc?.accountId?.trim();
  return account ? { channel, to, account_id: account } : { channel, to };
}
