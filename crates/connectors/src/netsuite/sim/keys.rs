//! A throwaway P-256 key pair for the simulator's OAuth 2.0 client credentials certificate.
//! Test material only: never configure it for a real NetSuite account.

/// PKCS#8 private key for ES256 assertions.
pub const TEST_EC_PRIVATE_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgHlVwrqXVJEBw8ojV
87D5nQboV5C8qbMYeby7eyUrlEGhRANCAAS/Cug8uAlcahDDF38UkLotASWftaGW
jL8p/qBQQx72HuqMO6K9+h084xIS8ChgewDdymslXGZQcMs09/SFZbHX
-----END PRIVATE KEY-----
";

/// The matching public key the simulator verifies with.
pub const TEST_EC_PUBLIC_KEY_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEvwroPLgJXGoQwxd/FJC6LQEln7Wh
loy/Kf6gUEMe9h7qjDuivfodPOMSEvAoYHsA3cprJVxmUHDLNPf0hWWx1w==
-----END PUBLIC KEY-----
";
