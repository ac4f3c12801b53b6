//! The driver's provider protocol (`v1alpha1.CSIDriverProvider`), generated
//! from `proto/service.proto` by `build.rs`.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("v1alpha1");
