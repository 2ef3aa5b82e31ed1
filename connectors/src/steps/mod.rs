//! Step handlers that reach outside the engine: the `code` sandbox and `api_call` HTTP.
