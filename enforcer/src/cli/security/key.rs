//! `enforcer key`: generate a signing key pair, show a key's id.

use super::*;

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate an Ed25519 signing key: PREFIX.key (private, mode 0600) and PREFIX.pub.
    ///
    /// The key id printed is derived from the public key; paste the printed entry into
    /// the trust store and choose its roles there. The private key is never printed.
    Generate {
        /// Path prefix of the files to write, e.g. keys/alice; existing files are never
        /// overwritten.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
    /// Print the key id and public key of a .pub or .key file (never the private key).
    Show {
        /// A .pub or .key file.
        path: PathBuf,
    },
}

pub(super) fn key_generate(prefix: &Path) -> anyhow::Result<ExitCode> {
    let name = prefix
        .file_name()
        .and_then(|n| n.to_str())
        .context("--out must end in a file name, e.g. keys/alice")?
        .to_owned();
    let key_path = prefix.with_file_name(format!("{name}.key"));
    let pub_path = prefix.with_file_name(format!("{name}.pub"));
    for path in [&key_path, &pub_path] {
        if path.exists() {
            bail!(
                "{} already exists; refusing to overwrite a key",
                path.display()
            );
        }
    }
    let key = SigningKey::generate();
    key.write_new(&key_path, &name)?;
    let public = encode_public_key(&key.public_key());
    crate::fsutil::create_new_synced(&pub_path, format!("{public}\n").as_bytes(), 0o644)
        .with_context(|| format!("cannot create {}", pub_path.display()))?;
    println!("generated key {name:?}, key id {}", key.key_id());
    println!(
        "  private key: {} (mode 0600: keep it secret)",
        key_path.display()
    );
    println!("  public key:  {}", pub_path.display());
    println!("To trust it, add this to the trust store and choose its roles:");
    println!(
        "[[keys]]\nname = {name:?}\npublic_key = {public:?}\nroles = [\"bundle\"]  # and/or \"revocation\""
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn key_show(path: &Path) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let public = match parse_public_key(&text) {
        Ok(public) => public,
        Err(_) => SigningKey::load(path)?.public_key(),
    };
    println!("key id:     {}", KeyId::of(&public));
    println!("public key: {}", encode_public_key(&public));
    Ok(ExitCode::SUCCESS)
}
