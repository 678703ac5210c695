//! The `kvs` binary as a client: each test starts a server in this process,
//! runs the real executable against it, and judges it as a script would, by
//! its stdout, its stderr and its exit code.

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Run, TestServer, fake_secret, free_port, kv, run};
use serde_json::{Value, json};

/// How to run `kvs` against one server: the URL, token and project go in
/// the environment, as a user's shell would set them.
struct Kvs {
    url: String,
    token: String,
    project: String,
}

impl Kvs {
    /// The server's admin, in the `default` project.
    fn admin(server: &TestServer) -> Kvs {
        Kvs {
            url: server.url.clone(),
            token: server.admin_token.clone(),
            project: "default".to_owned(),
        }
    }

    fn with_token(&self, token: &str) -> Kvs {
        Kvs {
            token: token.to_owned(),
            ..self.in_project(&self.project)
        }
    }

    fn in_project(&self, project: &str) -> Kvs {
        Kvs {
            url: self.url.clone(),
            token: self.token.clone(),
            project: project.to_owned(),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, b"")
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kvs"));
        command.args(args);
        self.run_command(command, stdin)
    }

    /// `kvs ARGS…` under the usual umask (022), whatever the test's.
    fn run_under_usual_umask(&self, args: &[&str]) -> Run {
        let mut command = Command::new("sh");
        command
            .args(["-c", "umask 022 && exec \"$0\" \"$@\""])
            .arg(env!("CARGO_BIN_EXE_kvs"))
            .args(args);
        self.run_command(command, b"")
    }

    fn run_command(&self, mut command: Command, stdin: &[u8]) -> Run {
        command
            .env("KVS_URL", &self.url)
            .env("KVS_TOKEN", &self.token)
            .env("KVS_PROJECT", &self.project);
        run(command, stdin)
    }
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.ok())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    fn lines(&self) -> Vec<String> {
        self.ok().lines().map(str::to_owned).collect()
    }

    /// Asserts this exit code and an error line naming `code` on stderr.
    fn fails(&self, exit: i32, code: &str) {
        assert_eq!(self.code, exit, "stderr: {}", self.stderr);
        assert!(
            self.stderr.starts_with("kvs: ") && self.stderr.contains(code),
            "stderr: {}",
            self.stderr
        );
    }
}

fn binary_value() -> Vec<u8> {
    (0..=255u8).cycle().take(70_000).collect()
}

#[test]
fn a_binary_value_from_stdin_comes_back_byte_for_byte() {
    let server = TestServer::start();
    let kvs = Kvs::admin(&server);
    let value = binary_value();
    kvs.run_with_stdin(&["put", "bin"], &value).ok();
    kvs.run_with_stdin(&["put", "dash", "-"], &value).ok();
    for key in ["bin", "dash"] {
        let got = kvs.run(&["get", key]);
        assert_eq!(got.code, 0, "{}", got.stderr);
        assert!(got.stdout == value, "{key} came back changed");
    }
    let meta = kvs.run(&["get", "bin", "--meta", "--json"]).json();
    assert_eq!(meta["content_type"], "application/octet-stream");
    assert_eq!(meta["size"], value.len());
}

#[test]
fn a_value_from_a_file_comes_back_byte_for_byte() {
    let server = TestServer::start();
    let kvs = Kvs::admin(&server);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("value.bin");
    std::fs::write(&file, binary_value()).unwrap();
    kvs.run(&["put", "from/file", &format!("@{}", file.display())])
        .ok();
    assert!(kvs.run(&["get", "from/file"]).stdout == binary_value());
}

#[test]
fn a_missing_file_is_an_error_that_names_it() {
    let server = TestServer::start();
    let run = Kvs::admin(&server).run(&["put", "k", "@/no/such/file"]);
    run.fails(1, "/no/such/file");
}

#[test]
fn a_value_given_as_an_argument_is_stored_as_utf8_text() {
    let server = TestServer::start();
    let kvs = Kvs::admin(&server);
    let put = kvs.run(&["put", "greeting", "héllo wörld"]).ok();
    assert!(put.starts_with("created greeting"), "{put}");
    assert_eq!(kvs.run(&["get", "greeting"]).ok(), "héllo wörld");
    let meta = kvs.run(&["get", "greeting", "--meta"]).ok();
    assert!(meta.contains("text/plain; charset=utf-8"), "{meta}");

    kvs.run(&[
        "put",
        "doc",
        r#"{"a":1}"#,
        "--content-type",
        "application/json",
    ])
    .ok();
    let meta = kvs.run(&["get", "doc", "--json"]).json();
    assert_eq!(meta["content_type"], "application/json");
    assert_eq!(meta["value"], json!({"a": 1}));
}

#[test]
fn keys_with_spaces_plus_and_percent_signs_reach_the_server_unchanged() {
    let server = TestServer::start();
    let kvs = Kvs::admin(&server);
    let key = "a b/c+d%2F?x=1#é";
    kvs.run(&["put", key, "odd"]).ok();
    assert_eq!(server.admin().get(&kv("default", key)).body, b"odd");
    assert_eq!(kvs.run(&["get", key]).ok(), "odd");
    assert_eq!(kvs.run(&["list", "--prefix", "a b/c+"]).lines(), [key]);
    assert_eq!(
        kvs.run(&["list", "--prefix", "a b/c "]).lines(),
        Vec::<String>::new()
    );
}

#[test]
fn list_follows_cursors_to_print_every_key() {
    let server = TestServer::start();
    let admin = server.admin();
    let keys: Vec<String> = (0..250).map(|i| format!("k{i:03}")).collect();
    for key in &keys {
        assert_eq!(admin.put(&kv("default", key), b"v").status, 201);
    }
    let kvs = Kvs::admin(&server);
    assert_eq!(kvs.run(&["list", "--limit", "100"]).lines(), keys);
    assert_eq!(
        kvs.run(&["list", "--limit", "7", "--prefix", "k1"])
            .lines()
            .len(),
        100
    );

    let entries = kvs.run(&["list", "--limit", "100", "--json"]).json();
    let listed: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["key"].as_str().unwrap())
        .collect();
    assert_eq!(listed, keys);

    let long = kvs.run(&["list", "--long", "--limit", "100"]).lines();
    assert_eq!(long.len(), 251, "a header and one line per key");
    assert!(
        long[1].ends_with("application/octet-stream  k000"),
        "{}",
        long[1]
    );

    assert!(kvs.run(&["list", "--prefix", "nothing"]).lines().is_empty());
}

#[test]
fn delete_removes_a_key_and_a_second_delete_exits_3() {
    let server = TestServer::start();
    let kvs = Kvs::admin(&server);
    kvs.run(&["put", "gone", "soon"]).ok();
    assert_eq!(kvs.run(&["delete", "gone"]).ok(), "deleted gone\n");
    kvs.run(&["get", "gone"]).fails(3, "key_not_found");
    kvs.run(&["delete", "gone"]).fails(3, "key_not_found");
}

#[test]
fn delete_by_prefix_removes_only_the_keys_under_it() {
    let server = TestServer::start();
    let kvs = Kvs::admin(&server);
    for key in ["a/1", "a/2", "ab", "b"] {
        kvs.run(&["put", key, "v"]).ok();
    }
    assert_eq!(
        kvs.run(&["delete", "--prefix", "a/"]).ok(),
        "deleted 2 keys\n"
    );
    assert_eq!(kvs.run(&["list"]).lines(), ["ab", "b"]);
    // An empty prefix would clear the project: that takes --all.
    assert_eq!(kvs.run(&["delete", "--prefix", ""]).code, 2);
    assert_eq!(kvs.run(&["list"]).lines().len(), 2);
    assert_eq!(kvs.run(&["delete", "--all"]).ok(), "deleted 2 keys\n");
    assert!(kvs.run(&["list"]).lines().is_empty());
}

#[test]
fn getting_a_missing_key_exits_3_with_the_error_on_stderr() {
    let server = TestServer::start();
    let run = Kvs::admin(&server).run(&["get", "missing"]);
    run.fails(3, "kvs: key_not_found: no such key");
    assert!(run.stdout.is_empty());
}

#[test]
fn a_bad_token_exits_1_with_unauthorized_and_is_never_shown() {
    let server = TestServer::start();
    let secret = fake_secret();
    let kvs = Kvs::admin(&server).with_token(&secret);
    let run = kvs.run(&["list"]);
    run.fails(1, "unauthorized");
    assert!(!run.stderr.contains(&secret));
    let help = kvs.run(&["get", "--help"]);
    assert!(!help.ok().contains(&secret));
}

#[test]
fn no_token_at_all_gets_a_hint() {
    let server = TestServer::start();
    let run = Kvs::admin(&server).with_token("").run(&["get", "k"]);
    run.fails(1, "unauthorized");
    assert!(run.stderr.contains("KVS_TOKEN"), "{}", run.stderr);
}

#[test]
fn an_unreachable_server_exits_4_naming_the_url() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let kvs = Kvs {
        url: url.clone(),
        token: fake_secret(),
        project: "default".to_owned(),
    };
    let run = kvs.run(&["get", "k"]);
    run.fails(4, &url);
    assert!(run.stderr.contains("kvs serve"), "{}", run.stderr);
}

#[test]
fn flags_work_in_place_of_the_environment() {
    let server = TestServer::start();
    let secret = server.admin().create_project("flags", json!({}));
    let mut command = Command::new(env!("CARGO_BIN_EXE_kvs"));
    command
        .args(["put", "k", "v", "--url", &server.url, "--token", &secret])
        .args(["--project", "flags"])
        .env_remove("KVS_URL")
        .env_remove("KVS_TOKEN")
        .env_remove("KVS_PROJECT");
    run(command, b"").ok();
    let answer = server.admin().get(&kv("flags", "k"));
    assert_eq!(answer.body, b"v");
}

#[test]
fn a_bad_url_is_a_usage_error() {
    let server = TestServer::start();
    let run = Kvs::admin(&server).run(&["list", "--url", "localhost"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

#[test]
fn project_set_opens_a_project_and_show_and_list_say_so_plainly() {
    let server = TestServer::start();
    let admin = Kvs::admin(&server);
    admin.run(&["project", "create", "shop"]).ok();
    let shown = admin.run(&["project", "show", "shop"]).ok();
    assert!(!shown.contains("PUBLIC"), "{shown}");
    let set = admin
        .run(&[
            "project",
            "set",
            "shop",
            "--public",
            "read",
            "--max-keys",
            "9",
        ])
        .ok();
    assert!(
        set.contains("PUBLIC: anyone who reaches this server may read the keys of shop"),
        "{set}"
    );
    let shown = admin.run(&["project", "show", "shop", "--json"]).json();
    assert_eq!(
        (&shown["public"], &shown["max_keys"]),
        (&json!("read"), &json!(9))
    );
    let listed = admin.run(&["project", "list"]).lines();
    assert!(listed[0].contains("PUBLIC"), "{listed:?}");
    let row = listed
        .iter()
        .find(|line| line.starts_with("shop "))
        .unwrap();
    assert!(row.contains(" read "), "{row}");
    admin
        .run(&[
            "project",
            "set",
            "shop",
            "--max-keys",
            "none",
            "--public",
            "none",
        ])
        .ok();
    let shown = admin.run(&["project", "show", "shop", "--json"]).json();
    assert_eq!(
        (&shown["public"], &shown["max_keys"]),
        (&json!("none"), &Value::Null)
    );
    let nothing = admin.run(&["project", "set", "shop"]);
    assert_eq!(nothing.code, 2, "{}", nothing.stderr);
    assert!(nothing.stderr.contains("--public"), "{}", nothing.stderr);
    let wrong = admin.run(&["project", "set", "shop", "--public", "everyone"]);
    assert_eq!(wrong.code, 2, "{}", wrong.stderr);
    assert!(wrong.stderr.contains("everyone"), "{}", wrong.stderr);
    let created = admin
        .run(&["project", "create", "open", "--public", "write"])
        .ok();
    assert!(
        created.contains("read and write the keys of open"),
        "{created}"
    );
}

#[test]
fn projects_are_created_listed_shown_and_deleted() {
    let server = TestServer::start();
    let admin = Kvs::admin(&server);
    let created = admin
        .run(&[
            "project",
            "create",
            "shop",
            "--storage",
            "memory",
            "--max-keys",
            "5",
            "--no-list-keys",
        ])
        .ok();
    // The manage token's secret is the last word of its line.
    let secret = created
        .lines()
        .find(|line| line.starts_with("manage token"))
        .and_then(|line| line.split_whitespace().last())
        .unwrap_or_else(|| panic!("no token in {created}"));
    assert!(secret.starts_with("kvs_"), "{created}");
    let manager = admin.with_token(secret).in_project("shop");
    manager.run(&["put", "k", "v"]).ok();
    assert_eq!(manager.run(&["get", "k"]).ok(), "v");

    admin
        .run(&["project", "create", "shop"])
        .fails(1, "conflict");
    let listed = admin.run(&["project", "list"]).lines();
    assert!(listed[0].starts_with("ID"), "{listed:?}");
    assert!(
        listed.iter().any(|line| line.starts_with("shop ")),
        "{listed:?}"
    );

    let shown = admin.run(&["project", "show", "shop", "--json"]).json();
    assert_eq!(shown["storage"], "memory");
    assert_eq!(shown["max_keys"], 5);
    assert_eq!(shown["keys_discoverable"], false);
    assert_eq!(shown["keys"], 1);
    assert!(
        admin
            .run(&["project", "show", "shop"])
            .ok()
            .contains("memory")
    );

    admin.run(&["project", "delete", "shop"]).ok();
    admin
        .run(&["project", "show", "shop"])
        .fails(3, "project_not_found");
    admin
        .run(&["project", "delete", "shop"])
        .fails(3, "project_not_found");
    manager.run(&["get", "k"]).fails(1, "unauthorized");
}

#[test]
fn a_revoked_token_stops_working() {
    let server = TestServer::start();
    let admin = Kvs::admin(&server).in_project("app");
    server.admin().create_project("app", json!({}));
    let created = admin.run(&[
        "token",
        "create",
        "--role",
        "write",
        "--prefix",
        "team/",
        "--name",
        "writer",
        "--expires-in",
        "1h",
    ]);
    let secret = created.ok().trim_end().to_owned();
    assert!(
        secret.starts_with("kvs_") && !secret.contains(' '),
        "{secret}"
    );
    assert!(created.stderr.contains("write token") && !created.stderr.contains(&secret));

    let writer = admin.with_token(&secret);
    writer.run(&["put", "team/x", "1"]).ok();
    writer.run(&["put", "other", "1"]).fails(1, "forbidden");

    let listed = admin.run(&["token", "list"]);
    assert!(listed.ok().contains("writer"));
    assert!(!listed.text().contains(&secret));
    let tokens = admin.run(&["token", "list", "--json"]).json();
    let id = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|token| token["name"] == "writer")
        .and_then(|token| token["id"].as_str())
        .unwrap()
        .to_owned();

    assert_eq!(
        admin.run(&["token", "revoke", &id]).ok(),
        format!("revoked token {id}\n")
    );
    writer.run(&["get", "team/x"]).fails(1, "unauthorized");
    admin
        .run(&["token", "revoke", &id])
        .fails(3, "token_not_found");
}

#[test]
fn admin_tokens_are_created_listed_and_revoked() {
    let server = TestServer::start();
    let admin = Kvs::admin(&server);
    let created = admin.run(&["token", "create", "--admin", "--name", "ops", "--json"]);
    let token = created.json();
    assert_eq!(token["role"], "admin");
    let ops = admin.with_token(token["secret"].as_str().unwrap());
    ops.run(&["project", "list"]).ok();
    assert!(
        admin
            .run(&["token", "list", "--admin"])
            .ok()
            .contains("ops")
    );

    let id = token["id"].as_str().unwrap();
    admin.run(&["token", "revoke", "--admin", id]).ok();
    ops.run(&["project", "list"]).fails(1, "unauthorized");
    // --admin and --role ask for two different things.
    assert_eq!(
        admin
            .run(&["token", "create", "--admin", "--role", "read"])
            .code,
        2
    );
}

#[test]
fn json_output_parses_as_json() {
    let server = TestServer::start();
    let kvs = Kvs::admin(&server);
    let put = kvs.run(&["put", "j/1", "one", "--json"]).json();
    assert_eq!(put["key"], "j/1");
    assert_eq!(put["version"].as_u64().map(|v| v > 0), Some(true));
    assert_eq!(kvs.run(&["get", "j/1", "--json"]).json()["value"], "one");
    assert_eq!(kvs.run(&["list", "--json"]).json()[0]["key"], "j/1");
    assert!(kvs.run(&["project", "list", "--json"]).json()["projects"].is_array());
    assert_eq!(
        kvs.run(&["project", "show", "default", "--json"]).json()["id"],
        "default"
    );
    assert!(kvs.run(&["token", "list", "--admin", "--json"]).json()["tokens"].is_array());
    let deleted = kvs.run(&["delete", "--prefix", "j/", "--json"]).json();
    assert_eq!(deleted["deleted"], 1);
}

/// JSON output without its layout: every whitespace character dropped
/// (the values these tests print hold none inside their strings).
fn compact(text: &str) -> String {
    text.split_whitespace().collect()
}

#[test]
fn json_output_prints_json_values_and_answers_as_the_server_sent_them() {
    let server = TestServer::start();
    let kvs = Kvs::admin(&server);
    // Beyond 64 bits, keys out of order: a `serde_json::Value` on the way
    // would print 1.2345678901234568e+29 and sort the keys.
    let doc = r#"{"n":123456789012345678901234567890,"b":1,"a":2}"#;
    kvs.run(&["put", "doc", doc, "--content-type", "application/json"])
        .ok();
    let got = kvs.run(&["get", "doc", "--json"]).ok();
    assert!(got.lines().count() > 5, "pretty-printed: {got}");
    assert!(
        compact(&got).contains(&format!(r#""value":{doc},"encoding":"json""#)),
        "{got}"
    );
    let latest = compact(&kvs.run(&["latest", "doc", "--json"]).ok());
    assert!(
        latest.contains(&format!(r#""value":{doc},"encoding":"json""#)),
        "{latest}"
    );

    // A listing's entries in the server's own field order.
    #[derive(serde::Deserialize)]
    struct Page {
        keys: Box<serde_json::value::RawValue>,
    }
    let listed = server.admin().get("/v1/projects/default/kv");
    let page: Page = serde_json::from_slice(&listed.body).unwrap();
    assert_eq!(compact(&kvs.run(&["list", "--json"]).ok()), page.keys.get());

    // A transaction is sent as written, and its answer printed as sent.
    let txn =
        format!(r#"{{"ops":[{{"op":"put","key":"t","value":{doc}}},{{"op":"get","key":"t"}}]}}"#);
    let answer = compact(&kvs.run_with_stdin(&["txn", "--json"], txn.as_bytes()).ok());
    assert!(answer.contains(&format!(r#""value":{doc}"#)), "{answer}");
    assert_eq!(kvs.run(&["get", "t"]).ok(), doc);
}

#[test]
fn txn_from_stdin_applies_puts_and_incr_and_shows_gets() {
    let server = TestServer::start();
    let kvs = Kvs::admin(&server);
    kvs.run(&["put", "old", "bye"]).ok();
    let txn = json!({
        "checks": [{"key": "fresh", "exists": false}],
        "ops": [
            {"op": "put", "key": "fresh", "value": "hello"},
            {"op": "incr", "key": "n", "by": 5},
            {"op": "get", "key": "fresh"},
            {"op": "delete", "key": "old"},
            {"op": "delete", "key": "never"},
            {"op": "get", "key": "missing"},
            {"op": "put", "key": "raw", "value_base64": "AP8="},
            {"op": "get", "key": "raw"},
        ]
    });
    let lines = kvs
        .run_with_stdin(&["txn"], txn.to_string().as_bytes())
        .lines();
    assert_eq!(lines.len(), 8, "{lines:?}");
    assert!(lines[0].starts_with("put fresh (version "), "{}", lines[0]);
    assert_eq!(lines[1], "incr n = 5");
    assert_eq!(lines[2], "get fresh: hello");
    assert_eq!(lines[3], "deleted old");
    assert_eq!(lines[4], "never was absent");
    assert_eq!(lines[5], "get missing: absent");
    assert!(lines[7].starts_with("get raw: (2 bytes"), "{}", lines[7]);
    assert_eq!(kvs.run(&["get", "fresh"]).ok(), "hello");
    assert_eq!(kvs.run(&["get", "n"]).ok(), "5");
    kvs.run(&["get", "old"]).fails(3, "key_not_found");

    // From a file too, `-` is stdin, and --json prints the server's answer.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("txn.json");
    let incr = json!({"ops": [{"op": "incr", "key": "n"}]});
    std::fs::write(&file, incr.to_string()).unwrap();
    let answer = kvs.run(&["txn", file.to_str().unwrap(), "--json"]).json();
    assert_eq!(answer["results"][0]["value"], 6);
    assert!(answer["revision"].as_u64().is_some());
    let answer = kvs
        .run_with_stdin(&["txn", "-", "--json"], incr.to_string().as_bytes())
        .json();
    assert_eq!(answer["results"][0]["value"], 7);
}

#[test]
fn a_txn_whose_check_fails_exits_1_naming_the_check_and_applies_nothing() {
    let server = TestServer::start();
    let kvs = Kvs::admin(&server);
    let put = kvs.run(&["put", "a", "one", "--json"]).json();
    let version = put["version"].as_u64().unwrap();
    let txn = json!({
        "checks": [
            {"key": "a", "version": version},
            {"key": "a", "version": version + 1000},
            {"key": "b", "exists": true},
        ],
        "ops": [{"op": "put", "key": "a", "value": "two"}]
    });
    let run = kvs.run_with_stdin(&["txn"], txn.to_string().as_bytes());
    run.fails(1, "precondition_failed");
    assert!(
        run.stderr
            .contains(&format!("#1 (a at version {})", version + 1000)),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("#2 (b exists: true)"), "{}", run.stderr);
    assert!(!run.stderr.contains("#0"), "{}", run.stderr);
    assert_eq!(kvs.run(&["get", "a"]).ok(), "one");

    // An op that cannot apply is named by its index.
    let txn = json!({"ops": [
        {"op": "put", "key": "b", "value": "x"},
        {"op": "incr", "key": "a"},
    ]});
    let run = kvs.run_with_stdin(&["txn"], txn.to_string().as_bytes());
    run.fails(1, "conflict");
    assert!(
        run.stderr.contains("failed op #1 (incr a)"),
        "{}",
        run.stderr
    );
    kvs.run(&["get", "b"]).fails(3, "key_not_found");

    kvs.run_with_stdin(&["txn"], b"not json")
        .fails(1, "not JSON");
}

#[test]
fn incr_counts_from_zero_and_goes_negative() {
    let server = TestServer::start();
    let kvs = Kvs::admin(&server);
    assert_eq!(kvs.run(&["incr", "n"]).ok(), "1\n");
    assert_eq!(kvs.run(&["incr", "n", "--by", "10"]).ok(), "11\n");
    assert_eq!(kvs.run(&["incr", "n", "--by", "-20"]).ok(), "-9\n");
    assert_eq!(kvs.run(&["incr", "n", "--by=-1"]).ok(), "-10\n");
    assert_eq!(kvs.run(&["get", "n"]).ok(), "-10");
    let answer = kvs.run(&["incr", "n", "--json"]).json();
    assert_eq!(answer["value"], -9);
    assert_eq!(answer["key"], "n");
    kvs.run(&["put", "text", "abc"]).ok();
    kvs.run(&["incr", "text"]).fails(1, "conflict");
    assert_eq!(kvs.run(&["incr", "n", "--by", "x"]).code, 2);
}

#[test]
fn latest_prints_the_most_recently_written_key() {
    let server = TestServer::start();
    let kvs = Kvs::admin(&server);
    kvs.run(&["put", "a,1", "first"]).ok();
    kvs.run(&["put", "b", "second"]).ok();
    let run = kvs.run(&["latest", "a,1", "b", "absent"]);
    assert_eq!(run.ok(), "second");
    assert!(run.stderr.contains("kvs: latest is b"), "{}", run.stderr);

    kvs.run(&["put", "a,1", "third"]).ok();
    let run = kvs.run(&["latest", "b", "a,1"]);
    assert_eq!(run.ok(), "third");
    assert!(run.stderr.contains("kvs: latest is a,1"), "{}", run.stderr);

    let answer = kvs.run(&["latest", "b", "a,1", "--json"]).json();
    assert_eq!(answer["key"], "a,1");
    assert_eq!(answer["value"], "third");

    kvs.run(&["latest", "none", "nada"])
        .fails(3, "key_not_found");
    assert_eq!(kvs.run(&["latest"]).code, 2);
}

#[test]
fn put_if_version_succeeds_with_the_current_version_and_fails_with_a_stale_one() {
    let server = TestServer::start();
    let kvs = Kvs::admin(&server);
    let first = kvs.run(&["put", "k", "one", "--json"]).json()["version"]
        .as_u64()
        .unwrap();
    let second = kvs
        .run(&[
            "put",
            "k",
            "two",
            "--if-version",
            &first.to_string(),
            "--json",
        ])
        .json()["version"]
        .as_u64()
        .unwrap();
    assert!(second > first);

    let run = kvs.run(&["put", "k", "three", "--if-version", &first.to_string()]);
    run.fails(1, "precondition_failed");
    assert!(
        run.stderr
            .contains(&format!("the current version is {second}")),
        "{}",
        run.stderr
    );
    assert_eq!(kvs.run(&["get", "k"]).ok(), "two");

    let run = kvs.run(&["put", "nokey", "x", "--if-version", "1"]);
    run.fails(1, "precondition_failed");
    assert!(run.stderr.contains("does not exist"), "{}", run.stderr);

    let run = kvs.run(&["delete", "k", "--if-version", &first.to_string()]);
    run.fails(1, "precondition_failed");
    assert!(
        run.stderr
            .contains(&format!("the current version is {second}")),
        "{}",
        run.stderr
    );
    kvs.run(&["delete", "k", "--if-version", &second.to_string()])
        .ok();
    kvs.run(&["get", "k"]).fails(3, "key_not_found");
}

#[test]
fn completions_and_the_man_page_are_generated_from_the_command_line() {
    let kvs = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kvs"));
        command.args(args);
        run(command, b"")
    };
    let bash = kvs(&["completions", "bash"]).ok();
    assert!(
        bash.contains("serve") && bash.contains("complete"),
        "{bash}"
    );
    let zsh = kvs(&["completions", "zsh"]).ok();
    assert!(zsh.starts_with("#compdef kvs"), "{zsh}");
    let page = kvs(&["man"]).ok();
    assert!(
        page.lines().any(|line| line.starts_with(".TH kvs ")),
        "{page}"
    );
    assert!(page.contains("serve") && page.contains("top"), "{page}");
    assert_eq!(kvs(&["completions", "cmd.exe"]).code, 2);
}

#[test]
fn a_value_starting_with_at_that_is_no_file_says_how_to_store_the_text() {
    let server = TestServer::start();
    let admin = Kvs::admin(&server);
    let run = admin.run(&["put", "k", "@jack"]);
    run.fails(1, "cannot read jack");
    assert!(run.stderr.contains("write @@jack"), "{}", run.stderr);
    admin.run(&["put", "k", "@@jack"]).ok();
    assert_eq!(admin.run(&["get", "k"]).text(), "@jack");
}

#[test]
fn an_unknown_project_is_named_with_the_ways_out() {
    let server = TestServer::start();
    let admin = Kvs::admin(&server);
    let run = admin.in_project("copy").run(&["get", "greeting"]);
    run.fails(3, "project_not_found");
    for hint in [
        "\"copy\"",
        "-p/--project",
        "KVS_PROJECT",
        "kvs project create copy",
    ] {
        assert!(run.stderr.contains(hint), "{hint}: {}", run.stderr);
    }
}

#[test]
fn project_create_print_secret_prints_only_a_usable_secret() {
    let server = TestServer::start();
    let admin = Kvs::admin(&server);
    let secret = admin
        .run(&["project", "create", "demo", "--print-secret"])
        .ok();
    let secret = secret.trim_end_matches('\n');
    assert!(
        secret.starts_with("kvs_") && !secret.contains(char::is_whitespace),
        "{secret:?}"
    );
    let demo = admin.with_token(secret).in_project("demo");
    demo.run(&["put", "greeting", "hi"]).ok();
    assert_eq!(demo.run(&["get", "greeting"]).text(), "hi");
}

#[test]
fn serve_on_a_file_or_on_a_store_in_use_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let serve = |data_dir: &std::path::Path| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kvs"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir);
        run(command, b"")
    };
    let on_file = serve(&file);
    assert_ne!(on_file.code, 0);
    assert!(
        on_file.stderr.contains("is a file, not a directory")
            && on_file.stderr.contains("--data-dir"),
        "{}",
        on_file.stderr
    );
    let data = dir.path().join("data");
    let running = common::ServerProcess::start(&data, &common::fake_secret());
    let second = serve(&data);
    assert_ne!(second.code, 0);
    assert!(
        second.stderr.contains("in use by another kvs server")
            && second.stderr.contains("--data-dir"),
        "{}",
        second.stderr
    );
    drop(running);
}

/// `kvs serve` with these arguments and environment, on a fresh data
/// directory and a free port: what it wrote to stderr, and its exit code
/// (`None`: it served, and was stopped once ready). A server still starting
/// after 30 s fails the test.
fn serve_briefly(args: &[&str], env: &[(&str, &str)]) -> (String, Option<i32>) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let url = format!("http://127.0.0.1:{}", free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_kvs"));
    command
        .args(["serve", "--listen", url.trim_start_matches("http://")])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(args)
        .env_remove("KVS_LOG_LEVEL")
        .env_remove("RUST_LOG")
        .env("KVS_ADMIN_TOKEN", fake_secret())
        .envs(env.iter().copied())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = common::KillOnDrop(command.spawn().unwrap());
    let client = common::Client::new(&url, None);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let code = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status.code();
        }
        if client
            .request("GET", "/readyz", None, &[])
            .is_ok_and(|answer| answer.status == 200)
        {
            let _ = Command::new("kill")
                .args(["-TERM", &child.0.id().to_string()])
                .status();
            let _ = child.0.wait();
            break None;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server neither served nor stopped"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    (std::fs::read_to_string(&log).unwrap(), code)
}

/// A log level that names no level stops the start with one line, as other
/// bad settings do: `tracing` took `warning` for a target, and the server
/// ran logging nothing at all.
#[test]
fn serve_refuses_a_log_level_that_names_no_level() {
    for (args, env) in [
        (&["--log-level", "warning"][..], &[][..]),
        (&[], &[("KVS_LOG_LEVEL", "verbose")]),
    ] {
        let (log, code) = serve_briefly(args, env);
        assert_eq!(code, Some(1), "{log}");
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(log.starts_with("kvs serve: log_level"), "{log}");
    }
}

/// `--log-level`, `KVS_LOG_LEVEL` and the file decide what is logged; a
/// `RUST_LOG` left in the environment does not silence the server.
#[test]
fn rust_log_does_not_override_the_log_level() {
    let (log, code) = serve_briefly(&["--log-level", "info"], &[("RUST_LOG", "error")]);
    assert_eq!(code, None, "{log}");
    assert!(log.contains("kvs is listening"), "{log}");
    let (log, code) = serve_briefly(&[], &[("RUST_LOG", "error")]);
    assert_eq!(code, None, "{log}");
    assert!(log.contains("kvs is listening"), "{log}");
}

/// `kvs compact --data-dir` on a running server's directory points to the
/// online compaction, `kvs verify --data-dir` to the online check.
#[test]
fn an_offline_command_on_a_running_servers_store_names_its_online_form() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _server = common::ServerProcess::start(&data, &fake_secret());
    for command in ["compact", "verify"] {
        let mut kvs = Command::new(env!("CARGO_BIN_EXE_kvs"));
        kvs.arg(command).arg("--data-dir").arg(&data);
        let refused = run(kvs, b"");
        assert_eq!(refused.code, 1, "{}", refused.stderr);
        assert!(
            refused.stderr.contains("in use by a running server")
                && refused.stderr.contains(&format!("`kvs {command} --token"))
                && !refused.stderr.contains(if command == "compact" {
                    "verify"
                } else {
                    "compact"
                }),
            "{command}: {}",
            refused.stderr
        );
    }
}

/// `kvs verify` exits 5 when it finds damage, and 1 when it could not
/// check (a wrong token, a token without the right, a missing directory, a
/// store in use): both were 1, so a script that restores the last backup
/// on damage, as the README says, restored it after a typo in a token.
#[test]
fn verify_exits_5_for_damage_and_1_when_it_could_not_check() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::start_on(&data, &fake_secret());
    let value = vec![b'Q'; 8192];
    let put = server.admin().put(&kv("default", "big"), &value);
    assert_eq!(put.status, 201, "{}", put.text());
    let kvs = Kvs::admin(&server);
    assert!(kvs.run(&["verify"]).ok().contains("no damage"));
    kvs.with_token(&fake_secret())
        .run(&["verify"])
        .fails(1, "unauthorized");
    let reader = server.admin().mint("default", json!({"role": "read"}));
    kvs.with_token(&reader)
        .run(&["verify"])
        .fails(1, "forbidden");
    let in_use = kvs.run(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(in_use.code, 1, "{}", in_use.stderr);
    let missing = dir.path().join("missing");
    let missing = kvs.run(&["verify", "--data-dir", missing.to_str().unwrap()]);
    assert_eq!(missing.code, 1, "{}", missing.stderr);
    drop(server);

    // Damage: a byte of the stored value changed in the file.
    let file = data.join("kvs.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    let pattern = [b'Q'; 256];
    let mut flipped = 0;
    let mut at = 0;
    while let Some(found) = bytes[at..]
        .windows(pattern.len())
        .position(|w| w == pattern)
    {
        let middle = at + found + pattern.len() / 2;
        bytes[middle] ^= 0x01;
        flipped += 1;
        at = middle + 1;
    }
    assert!(flipped > 0, "the value is not in kvs.redb");
    std::fs::write(&file, &bytes).unwrap();
    let damaged = kvs.run(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(damaged.code, 5, "{}", damaged.text());
    let report = String::from_utf8_lossy(&damaged.stdout);
    assert!(report.contains("damaged: "), "{}", damaged.text());
    assert!(damaged.stderr.contains("damaged"), "{}", damaged.text());
    // `kvs verify | head -0`: the report cannot be printed (its pipe is
    // closed before the first line), and the damage still decides the code.
    let mut closed = Command::new(env!("CARGO_BIN_EXE_kvs"));
    closed
        .args(["verify", "--data-dir", data.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = closed.spawn().unwrap();
    drop(child.stdout.take());
    assert_eq!(child.wait().unwrap().code(), Some(5));
    // Its help says so.
    let mut help = Command::new(env!("CARGO_BIN_EXE_kvs"));
    help.args(["verify", "--help"]);
    let help = run(help, b"").ok();
    assert!(help.contains("\n  5  "), "{help}");
}

/// A base URL with a query or a fragment would swallow the API paths
/// appended to it (`get` printed the index page as the value): a usage
/// error.
#[test]
fn a_url_with_a_query_or_fragment_is_a_usage_error() {
    let server = TestServer::start();
    Kvs::admin(&server).run(&["put", "k", "v"]).ok();
    for url in [format!("{}#x", server.url), format!("{}/?x=1", server.url)] {
        let run = Kvs::admin(&server).run(&["get", "k", "--url", &url]);
        assert_eq!(run.code, 2, "{url}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{url}");
        assert!(
            run.stderr.contains("query") && run.stderr.contains("fragment"),
            "{url}: {}",
            run.stderr
        );
    }
}

/// `--token`'s help says how to keep the secret out of `ps`.
#[test]
fn the_token_help_points_to_kvs_token() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kvs"));
    command.args(["get", "--help"]);
    let help = run(command, b"").ok();
    let token = help
        .split("--token")
        .nth(1)
        .and_then(|after| after.split("[env: KVS_TOKEN]").next())
        .unwrap_or_else(|| panic!("{help}"));
    assert!(
        token.contains("KVS_TOKEN") && token.contains("`ps`"),
        "{help}"
    );
}

/// Runs `kvs ARGS…` with `env`, killing it if it has not ended within
/// `limit`: the run, and how long it took (`None`: it was still running).
fn run_for_at_most(
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> (Run, Option<Duration>) {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvs"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut took = None;
    while started.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            took = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if took.is_none() {
        child.kill().unwrap();
    }
    let status = child.wait().unwrap();
    let (mut stdout, mut stderr) = (Vec::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    };
    (run, took)
}

/// A server that takes connections and never answers (hung, or a port
/// that something else holds) is given up after `--timeout` (or
/// `KVS_TIMEOUT`) with exit 4, as one that cannot be reached, instead of
/// being waited for forever.
#[test]
fn a_server_that_never_answers_is_given_up_after_the_timeout() {
    // The kernel completes connections to a listening socket by itself, so
    // a listener that is never accepted from answers nothing, ever.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let token = fake_secret();
    let env = [
        ("KVS_URL", url.as_str()),
        ("KVS_TOKEN", token.as_str()),
        ("KVS_TIMEOUT", "1s"),
    ];
    for args in [
        &["get", "k"][..],
        &["list"],
        &["project", "list"],
        &["get", "k", "--timeout", "2s"],
    ] {
        let (run, took) = run_for_at_most(args, &env, Duration::from_secs(20));
        let took = took.unwrap_or_else(|| panic!("{args:?} still waited after 20 s"));
        run.fails(4, &url);
        assert!(
            run.stderr.contains("--timeout") && run.stderr.contains("KVS_TIMEOUT"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("cannot connect"), "{}", run.stderr);
        let asked = if args.contains(&"2s") { 2 } else { 1 };
        assert!(
            took >= Duration::from_secs(asked) && took < Duration::from_secs(asked + 10),
            "{args:?} gave up after {took:?}"
        );
    }
    // A write sent whole may have been applied by a server that then hung:
    // not exit 4, which a script may take as "nothing happened, try again"
    // (a review's finding: an incr retried on 4 counts twice).
    for args in [&["put", "k", "v"][..], &["incr", "n"]] {
        let (run, took) = run_for_at_most(args, &env, Duration::from_secs(20));
        assert!(took.is_some(), "{args:?} still waited after 20 s");
        run.fails(1, "may or may not have been applied");
    }
    drop(silent);
}

/// The default is long enough for a slow answer, and `--timeout 0` means
/// no limit: `kvs get` waits longer than a short timeout would.
#[test]
fn without_a_timeout_a_slow_answer_is_waited_for() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let token = fake_secret();
    for env in [
        vec![("KVS_URL", url.as_str()), ("KVS_TOKEN", token.as_str())],
        vec![
            ("KVS_URL", url.as_str()),
            ("KVS_TOKEN", token.as_str()),
            ("KVS_TIMEOUT", "0"),
        ],
    ] {
        let (run, took) = run_for_at_most(&["get", "k"], &env, Duration::from_secs(3));
        assert_eq!(took, None, "it gave up: {}", run.stderr);
    }
    drop(silent);
}

/// `--help` names the timeout, its default and its variable.
#[test]
fn the_timeout_is_in_the_help() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kvs"));
    command.args(["get", "--help"]);
    let help = run(command, b"").ok();
    assert!(
        help.contains("--timeout") && help.contains("KVS_TIMEOUT") && help.contains("30s"),
        "{help}"
    );
}

/// The permission bits of `path`, in octal.
fn mode(path: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    format!(
        "{:o}",
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    )
}

/// The files the client writes values into are readable by their owner
/// only (0600), whatever the umask, as the server's files are: an export
/// (also over a file that was readable by others), a backup, and the store
/// a restore writes.
#[test]
fn files_the_client_writes_values_into_are_private() {
    let server = TestServer::start();
    let kvs = Kvs::admin(&server);
    kvs.run(&["put", "secret", "s3cr3t"]).ok();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name);
    let text = |path: std::path::PathBuf| path.to_str().unwrap().to_owned();

    kvs.run_under_usual_umask(&["export", "-o", &text(file("new.jsonl"))])
        .ok();
    assert_eq!(mode(&file("new.jsonl")), "600");
    std::fs::write(file("old.jsonl"), "what was there\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let readable = std::fs::Permissions::from_mode(0o644);
        std::fs::set_permissions(file("old.jsonl"), readable).unwrap();
    }
    kvs.run_under_usual_umask(&["export", "-o", &text(file("old.jsonl"))])
        .ok();
    assert_eq!(mode(&file("old.jsonl")), "600");
    let exported = std::fs::read_to_string(file("old.jsonl")).unwrap();
    assert!(
        exported.contains("s3cr3t") && !exported.contains("what was there"),
        "{exported}"
    );

    kvs.run_under_usual_umask(&["backup", &text(file("backup.jsonl"))])
        .ok();
    assert_eq!(mode(&file("backup.jsonl")), "600");
    kvs.run_under_usual_umask(&[
        "restore",
        &text(file("backup.jsonl")),
        "--data-dir",
        &text(file("restored")),
    ])
    .ok();
    assert_eq!(mode(&file("restored")), "700");
    for entry in std::fs::read_dir(file("restored")).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), "600", "{}", path.display());
    }
}
