//! Compiles the .proto files with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "grayline/v1/model.proto",
        "grayline/v1/config.proto",
        "grayline/v1/proxy.proto",
        "grayline/v1/stats.proto",
        "grayline/v1/rollout.proto",
        "grayline/v1/demo.proto",
        "grayline/v1/registry.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::configure()
        .codec_path("crate::codec::SmallBufferCodec")
        .compile_fds(fds)?;
    Ok(())
}
