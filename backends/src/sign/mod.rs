//! Request signing for the backends whose clouds want it: AWS Signature
//! Version 4 ([`sigv4`]).

pub mod sigv4;
