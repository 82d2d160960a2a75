"""Chat completions, metered: the path of one request from route to recorded answer, one module per step.

1. `gateway/api/openai.py` reads the body (size limit) and `gateway/api/chat_request.py` parses it into a
   `ChatRequest` (a 400 names the bad field); the route authenticates the key first (401) and hands an
   `Inbound` to the service.
2. `admit.py` — admission: catalog model and the key's right to it, the provider adapter, the credential
   (platform key or the user's own), the fallback routes, the conversation id (ownership checked in
   storage, before any upstream spend) and the worst-case amount to reserve, for the dearest route.
3. `service.py` — `ChatService` reserves that amount (the only code that reserves, releases or settles).
4. `call.py` — the upstream call through `gateway/proxy.py`: each route in turn, each with retries and
   backoff, skipping providers whose circuit is open (policy: `resilience.py`, pure). A request that fails
   everywhere is logged as an error row (no tokens, no cost) and its reservation released.
5. `relay.py` — streams only: upstream events → OpenAI chunks → the client as they arrive; how the stream
   ended (success / cancelled / error / cut) is decided by a pure function.
6. `record.py` — usage (the provider's, else counted with tiktoken) × the model's prices → exact cost; the
   one `CompletionRecord` is built and committed by the group-commit recorder (storage/usage), which
   settles the reservation in the same transaction.
7. Back in `service.py`: only after the commit does the answer leave — the JSON body with the
   `x-synapgate-*` cost and balance headers, or the stream's `[DONE]`. A record that cannot be committed
   is a 503 (`record_failed`) and the reservation is released: nothing is charged.
"""

from gateway.chat.admit import Call, Inbound
from gateway.chat.service import ChatService

__all__ = ["Call", "ChatService", "Inbound"]
