//! Compiles the contracts in `proto/` without a system `protoc`: protox parses
//! them into a descriptor set, tonic-prost-build generates messages and
//! services from it, pbjson-build generates the proto3-JSON serde impls, and
//! the descriptor set itself is kept for server reflection.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTO_ROOT: &str = "proto";
const PROTO_FILES: &[&str] = &[
    "proto/kz/digitalmining/v1/common.proto",
    "proto/kz/digitalmining/v1/filing.proto",
    "proto/kz/digitalmining/v1/energy.proto",
    "proto/kz/digitalmining/v1/finance.proto",
    "proto/kz/digitalmining/v1/compliance.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    // sqlx::migrate! (PostgreSQL) embeds its migrations folder: a new file
    // must rebuild it. (SQLite's are listed in the code with include_str!.)
    println!("cargo:rerun-if-changed=migrations");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let descriptors = protox::compile(PROTO_FILES, [PROTO_ROOT])?;
    let descriptor_bytes = descriptors.encode_to_vec();
    fs::write(out_dir.join("minegate_descriptor.bin"), &descriptor_bytes)?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(descriptors)?;

    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .build(&[".kz.digitalmining.v1"])?;
    Ok(())
}
