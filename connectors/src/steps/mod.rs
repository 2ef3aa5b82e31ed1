//! Step handlers that reach outside the engine: the `code` sandbox, `api_call` HTTP and `llm`
//! model calls.

pub mod api_call;
pub mod code;
pub mod egress;
pub mod llm;

pub use api_call::ApiCallHandler;
pub use code::CodeHandler;
pub use llm::LlmHandler;
