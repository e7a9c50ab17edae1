//! What the benches share: the policy set they measure.

/// A 50-policy Cedar set shaped like a real one: 40 tenant permits, 5
/// group-and-model permits, 4 global forbids that never match, and one
/// data-residency forbid on `use_backend`. A principal of tenant `t7` in
/// group `g1` may call anything on route `chat`.
pub fn fifty_policies() -> String {
    policy_set(40, 5, 4)
}

/// The same shape with 20 policies (14 tenants, 2 groups, 3 forbids, the
/// residency rule): the load bench's full pipeline.
pub fn twenty_policies() -> String {
    policy_set(14, 2, 3)
}

fn policy_set(tenants: usize, groups: usize, forbids: usize) -> String {
    let mut p = String::new();
    for i in 0..tenants {
        p.push_str(&format!(
            "@id(\"tenant-{i}\")\npermit (principal in Skygate::Tenant::\"t{i}\", action in Skygate::Action::\"call\", resource)\nwhen {{ resource in Skygate::Route::\"chat\" && context.request_bytes < 100000 }};\n"
        ));
    }
    for i in 0..groups {
        p.push_str(&format!(
            "@id(\"group-{i}\")\npermit (principal in Skygate::Group::\"g{i}\", action == Skygate::Action::\"invoke\", resource == Skygate::Model::\"m{i}\");\n"
        ));
    }
    for i in 0..forbids {
        p.push_str(&format!(
            "@id(\"never-{i}\")\nforbid (principal, action in Skygate::Action::\"call\", resource)\nwhen {{ context.hour == 25 && context.estimated_tokens > {i} }};\n"
        ));
    }
    p.push_str("@id(\"residency\")\nforbid (principal in Skygate::Tenant::\"eu\", action == Skygate::Action::\"use_backend\", resource)\nunless { resource.region like \"europe-*\" };\n");
    p
}

pub mod prewarm_sim;

/// A child process (a simulator, a gateway) killed and reaped when dropped.
pub struct Kill(pub std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback address: bound, then released for a child to take.
pub fn free_port() -> std::io::Result<std::net::SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}
