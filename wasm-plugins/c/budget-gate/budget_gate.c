// budget-gate: an Accord SLA policy plugin written in C.
//
// While the route's error budget is spent, only requests marked critical are served; the
// others get 503 with Retry-After, so the budget's last errors go to the traffic that matters.
// The marking header is configured with a JSON string (default "x-priority"); a request is
// critical when that header's value is "critical".
//
// Built by the tests with Debian's clang and wasi-libc against bindings generated from
// wasm-plugins/wit by wit-bindgen's C generator (see wasm-plugins/README.md):
//
//   wit-bindgen c wasm-plugins/wit --world policy --out-dir gen
//   clang --target=wasm32-wasi -mexec-model=reactor -O2 -I gen \
//     budget_gate.c gen/policy.c gen/policy_component_type.o -o core.wasm
//   wasm-tools component new core.wasm --adapt wasi_snapshot_preview1.reactor.wasm -o budget_gate.wasm
//
// Ownership follows wit-bindgen's C conventions: arguments of exported functions belong to
// the plugin (freed here), results are allocated here and freed by the generated post-return
// code, and results of imported functions belong to the plugin (freed here).

#include <stdlib.h>
#include <string.h>

#include "policy.h"

#define RETRY_AFTER_SECONDS 60

static char *priority_header = NULL;

static bool set_error(policy_string_t *err, const char *message) {
    policy_string_dup(err, message);
    return false;
}

// configure(config: string) -> result<_, string>
bool exports_policy_configure(policy_string_t *config, policy_string_t *err) {
    const char *text = (const char *)config->ptr;
    size_t len = config->len;
    // Trim whitespace.
    while (len > 0 && (text[0] == ' ' || text[0] == '\n' || text[0] == '\t')) {
        text++;
        len--;
    }
    while (len > 0 && (text[len - 1] == ' ' || text[len - 1] == '\n' || text[len - 1] == '\t')) {
        len--;
    }
    const char *name = "x-priority";
    size_t name_len = strlen(name);
    if (len > 0) {
        if (len < 3 || text[0] != '"' || text[len - 1] != '"' ||
            memchr(text + 1, '"', len - 2) != NULL || memchr(text + 1, '\\', len - 2) != NULL) {
            policy_string_free(config);
            return set_error(err, "budget-gate configuration: expected a header name as a JSON string, "
                                  "e.g. \"x-priority\"");
        }
        name = text + 1;
        name_len = len - 2;
    }
    free(priority_header);
    priority_header = malloc(name_len + 1);
    if (priority_header == NULL) {
        policy_string_free(config);
        return set_error(err, "budget-gate: out of memory");
    }
    memcpy(priority_header, name, name_len);
    priority_header[name_len] = '\0';
    policy_string_free(config);
    return true;
}

static bool request_is_critical(void) {
    policy_string_t name;
    policy_string_set(&name, priority_header);
    policy_string_t value;
    bool present = accord_policy_request_header(&name, &value);
    bool critical = present && value.len == strlen("critical") &&
                    memcmp(value.ptr, "critical", value.len) == 0;
    if (present) {
        policy_string_free(&value);
    }
    return critical;
}

// on-request(head) -> decision
void exports_policy_on_request(policy_request_head_t *head, policy_decision_t *ret) {
    policy_request_head_free(head);
    ret->tag = ACCORD_POLICY_TYPES_DECISION_ALLOW;

    accord_policy_sla_route_snapshot_t route;
    if (!accord_policy_sla_route(&route)) {
        return; // No objective on this route.
    }
    bool exhausted = route.budget_exhausted;
    accord_policy_sla_route_snapshot_free(&route);
    if (!exhausted || request_is_critical()) {
        return;
    }

    policy_string_t counter;
    policy_string_set(&counter, "gated");
    accord_policy_telemetry_counter(&counter, 1);

    ret->tag = ACCORD_POLICY_TYPES_DECISION_REJECT;
    accord_policy_types_rejection_t *reject = &ret->val.reject;
    reject->status = 503;
    policy_string_dup(&reject->reason,
                      "the route's error budget is spent: only critical requests are served");
    reject->headers.ptr = NULL;
    reject->headers.len = 0;
    reject->retry_after_seconds.is_some = true;
    reject->retry_after_seconds.val = RETRY_AFTER_SECONDS;
}

// on-response(head) -> verdict
void exports_policy_on_response(policy_response_head_t *head, policy_verdict_t *ret) {
    policy_response_head_free(head);
    ret->tag = ACCORD_POLICY_TYPES_VERDICT_KEEP;
}
