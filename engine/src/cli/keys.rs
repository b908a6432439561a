//! `brigade keys [--secret-file F]`: the job's CURVE keys in Z85, for letting a ZeroMQ tool
//! into a job on purpose.

use crate::transport::net::{JobKeys, load_secret, z85};
use anyhow::{Result, bail};
use clap::Args;

#[derive(Args, Debug)]
pub struct KeysArgs {
    /// File holding the job secret (default: $BRIGADE_SECRET_FILE, then $BRIGADE_SECRET).
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<String>,
}

pub fn run(args: &KeysArgs) -> Result<()> {
    let Some(secret) = load_secret(args.secret_file.as_deref()).map_err(anyhow::Error::msg)? else {
        bail!(
            "no job secret: set BRIGADE_SECRET or BRIGADE_SECRET_FILE, or pass --secret-file (the keys are derived from it)"
        );
    };
    let keys = JobKeys::from_secret(&secret);
    println!("server public key   {}", z85(&keys.server.public));
    println!("server secret key   {}", z85(&keys.server.secret));
    println!("client public key   {}", z85(&keys.client.public));
    println!("client secret key   {}", z85(&keys.client.secret));
    eprintln!(
        "A ZeroMQ socket that connects to a rank (a PUSH feeding it) uses CURVE with curve_serverkey = the server public key and the client key pair; one that a rank connects to (a PULL tapping it) is a CURVE server with the server key pair. Anyone with these keys can join the job's links: keep them as secret as the job secret."
    );
    Ok(())
}
