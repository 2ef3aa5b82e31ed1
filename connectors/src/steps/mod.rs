//! Step handlers that reach outside the engine: the `code` sandbox, `api_call` HTTP and the
//! `event` bus.

pub mod api_call;
pub mod code;
pub mod egress;
pub mod event;

pub use api_call::ApiCallHandler;
pub use code::CodeHandler;
pub use event::EventHandler;
