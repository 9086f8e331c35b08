//! Prometheus metrics: the node_exporter textfile and the loopback listener, fed by a
//! real knock, a junk packet and a replay, monotonic across a reload (which replaces
//! the worker, whose counters would otherwise start again from zero).

use std::time::{Duration, Instant};

use crate::lab::{keys, ready, strs, Lab, C1, SRV};

fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Wait until the textfile shows `series` at `want` or more.
fn wait_for(lab: &Lab, series: &str, want: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let t = std::fs::read_to_string(lab.path("posternd.prom")).unwrap_or_default();
        if sample(&t, series).is_some_and(|v| v >= want) || Instant::now() > deadline {
            return t;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn metrics_reach_the_textfile_and_the_loopback_listener_and_never_go_back() {
    if !ready("metrics_reach_the_textfile_and_the_loopback_listener_and_never_go_back") {
        return;
    }
    let mut lab = Lab::new(&[22]);
    let prom = lab.path("posternd.prom");
    lab.configure(
        &format!(
            "METRICS_TEXTFILE {}\nMETRICS_LISTEN 127.0.0.1:9469\nSYSLOG_IDENTITY gw-knockd\n",
            prom.display()
        ),
        "SOURCE ANY\nKEY enc-1\nHMAC_KEY hmac-1\n",
    );
    lab.start(&[]);
    let k = keys("enc-1", "hmac-1");
    let mut a = strs(&k);
    a.extend(["-A", "tcp/22", "-a", C1, "-D", SRV]);
    let p = lab.fwknop(&lab.c1, &a);
    assert!(
        lab.c1.wait_open(SRV, 22, Duration::from_secs(5)),
        "{}",
        lab.log()
    );
    // SYSLOG_IDENTITY names every line.
    assert!(lab.log().contains("gw-knockd: "), "{}", lab.log());
    assert!(!lab.log().contains("posternd: "), "{}", lab.log());
    lab.send_raw(&lab.c1, SRV, &[&"A".repeat(120), &p]);
    let granted = "posternd_decisions_total{verdict=\"granted\",reason=\"\"}";
    let replay = "posternd_decisions_total{verdict=\"refused\",reason=\"replay\"}";
    let t = wait_for(&lab, replay, 1);
    assert_eq!(sample(&t, granted), Some(1), "{t}");
    assert_eq!(sample(&t, replay), Some(1), "{t}");
    assert_eq!(sample(&t, "posternd_grants_open"), Some(1), "{t}");
    let examined = sample(&t, "posternd_packets_examined_total").unwrap();
    assert!(examined >= 3, "{t}");
    let junk: u64 = t
        .lines()
        .filter(|l| l.starts_with("posternd_decisions_total{verdict=\"refused\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(junk >= 2, "the junk packet and the replay: {t}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&prom).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);

    // The listener, on the namespace's loopback only.
    let get = lab.srv.run(&[
        "python3",
        "-c",
        "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9469/metrics',timeout=5).read().decode())",
    ]);
    let served = String::from_utf8_lossy(&get.stdout);
    assert!(
        served.contains("# TYPE posternd_decisions_total counter"),
        "{served}"
    );
    assert!(sample(&served, granted) == Some(1), "{served}");
    let from_outside = lab.c1.run(&[
        "python3",
        "-c",
        &format!(
            "import socket;s=socket.socket();s.settimeout(1);print(s.connect_ex(('{SRV}',9469)))"
        ),
    ]);
    assert_ne!(
        String::from_utf8_lossy(&from_outside.stdout).trim(),
        "0",
        "the metrics listener answers the network"
    );

    // A reload replaces the worker: no counter goes back.
    let out = lab.run_posternd(&["-R"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // (The new worker opens its capture a moment after the reload.)
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut t = String::new();
    while Instant::now() < deadline {
        lab.send_raw(&lab.c1, SRV, &[&"B".repeat(120)]);
        std::thread::sleep(Duration::from_millis(1000));
        t = std::fs::read_to_string(&prom).unwrap_or_default();
        if sample(&t, "posternd_packets_examined_total").is_some_and(|v| v > examined) {
            break;
        }
    }
    assert!(
        sample(&t, "posternd_packets_examined_total").unwrap() > examined,
        "{t}\n{}",
        lab.log()
    );
    assert_eq!(sample(&t, replay), Some(1), "{t}");
    assert_eq!(sample(&t, granted), Some(1), "{t}");
    lab.stop();
}
