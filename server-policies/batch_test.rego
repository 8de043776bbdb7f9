package agent.authz_test

import data.agent.authz

test_batch_decisions_match_single_decisions if {
	read := call("get_customer_details", {"customer_id": "C1", "fields": {"name": true}}, "r", db_meta)
	pii := call("get_customer_details", {"customer_id": "C1", "fields": {"email": true}}, "p", db_meta)
	upd := call("update_customer_status", {"customer_id": "C1", "new_status": "active"}, "u", db_meta)
	shared := object.remove(request(internal_user, read), ["tool"])
	batch := authz.batch_decisions with input as object.union(shared, {"calls": [read, pii, upd]})
	batch.r == authz.decision with input as request(internal_user, read)
	batch.p == authz.decision with input as request(internal_user, pii)
	batch.u == authz.decision with input as request(internal_user, upd)
	batch.r.allow
	not batch.p.allow
	count(batch) == 3
}
