//! Step handlers that reach outside the engine: the `code` sandbox, `api_call` HTTP, `llm`
//! model calls, `research` (document search) and the `event` bus.

pub mod api_call;
pub mod code;
pub mod egress;
pub mod event;
pub mod llm;
pub mod research;
pub mod tools;

pub use api_call::ApiCallHandler;
pub use code::CodeHandler;
pub use event::EventHandler;
pub use llm::LlmHandler;
pub use research::ResearchHandler;
