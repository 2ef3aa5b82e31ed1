//! Step handlers that reach outside the engine: the `code` sandbox, `api_call` HTTP, `llm`
//! model calls (`model`: the conversations `llm` and a `research` summary share), `research`
//! (document search), the `event` bus, `connector` (actions through an owner's named
//! connections) and the `platform` actions that run as jobs (memory, notify).

pub mod api_call;
pub mod code;
pub mod connector;
pub mod egress;
pub mod event;
pub mod llm;
pub mod model;
pub mod platform;
pub mod research;
pub mod tools;

pub use api_call::ApiCallHandler;
pub use code::CodeHandler;
pub use connector::ConnectorHandler;
pub use event::EventHandler;
pub use llm::LlmHandler;
pub use model::ModelCalls;
pub use platform::PlatformHandler;
pub use research::ResearchHandler;
