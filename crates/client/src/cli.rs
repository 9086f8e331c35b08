//! Command-line flags, defined once; `--help` is generated from them.

use clap::{Args, Parser, Subcommand};

/// postern: Single Packet Authorization client, compatible with fwknop 2.6.
#[derive(Debug, Parser)]
#[command(name = "postern", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode an SPA packet with the given keys and print its fields as JSON.
    ///
    /// Keys are given the way access.conf names them. The packet's age is not checked.
    Decode(DecodeArgs),
}

/// Flags of `postern decode`.
#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// Rijndael key as a passphrase (access.conf KEY).
    #[arg(
        long = "key-rijndael",
        value_name = "PASS",
        conflicts_with = "key_base64_rijndael"
    )]
    pub key_rijndael: Option<String>,
    /// Rijndael key as base64 (access.conf KEY_BASE64).
    #[arg(long = "key-base64-rijndael", value_name = "B64")]
    pub key_base64_rijndael: Option<String>,
    /// HMAC key as a passphrase (access.conf HMAC_KEY).
    #[arg(
        long = "key-hmac",
        value_name = "PASS",
        conflicts_with = "key_base64_hmac"
    )]
    pub key_hmac: Option<String>,
    /// HMAC key as base64 (access.conf HMAC_KEY_BASE64).
    #[arg(long = "key-base64-hmac", value_name = "B64")]
    pub key_base64_hmac: Option<String>,
    /// HMAC type: md5, sha1, sha256 (default), sha384, sha512, sha3_256, sha3_512.
    #[arg(long = "hmac-digest-type", value_name = "NAME")]
    pub hmac_digest_type: Option<String>,
    /// Encryption mode: cbc (default), ecb, cfb, ofb, ctr, legacy.
    #[arg(
        short = 'M',
        long = "encryption-mode",
        value_name = "NAME",
        default_value = "cbc"
    )]
    pub encryption_mode: String,
    /// The packet; read from standard input when absent or `-`.
    pub packet: Option<String>,
}
