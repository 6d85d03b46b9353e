//! Task runtimes on the worker: the built-in kernels (trusted code in the client; their input is
//! data). Later, sandboxed WebAssembly.
