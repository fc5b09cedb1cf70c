import ssh2 from "ssh2";

/** Real OpenSSH-format key pairs, generated per test run. */
export function sshKeyPair(type: "ed25519" | "ecdsa" | "rsa", bits?: number): { private: string; public: string } {
  const opts = type === "ecdsa" ? { bits: bits ?? 256 } : type === "rsa" ? { bits: 2048 } : {};
  const kp = ssh2.utils.generateKeyPairSync(type, { ...opts, comment: "tenant@test" } as never);
  return { private: kp.private, public: kp.public.trim() };
}
