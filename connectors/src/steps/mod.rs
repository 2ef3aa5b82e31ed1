//! Step handlers that reach outside the engine: the `code` sandbox and `api_call` HTTP.

pub mod api_call;
pub mod code;
pub mod egress;

pub use api_call::ApiCallHandler;
pub use code::CodeHandler;
