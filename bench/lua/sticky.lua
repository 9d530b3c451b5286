-- Scenario (b): a 10 % canary sticky by cookie. Requests rotate over 10000 users, each
-- always sending the same uid cookie, so the split is exercised and every user is sticky.
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, { ["Cookie"] = "uid=user-" .. (n % 10000) })
end
