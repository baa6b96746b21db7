-- wrk script for telegram.sh: POSTs Telegram webhook updates, as Telegram sends
-- them, to the URL's path.
--
--   wrk -t1 -c50 -d10s -s telegram.lua http://127.0.0.1:18190/tg/bench -- RUN SECRET [CHATS] [SIZE]
--
-- Every request is a new update: a `message` (from, chat, date, text) in
-- Telegram's field order, `{"update_id":N,\n"message":{...}}`, SIZE bytes (1024
-- by default), with the headers Telegram sends (Content-Type, Accept-Encoding,
-- the secret token). The update_id never repeats, neither within a run nor
-- across the runs of one proxy (RUN, 1, 2, ... for each wrk invocation): a
-- repeated id would be answered from the dedup store without reaching a bot
-- and flatter the mode. Thread T of run RUN sends
--     BASE + RUN * RUN_STRIDE + T * THREAD_STRIDE + n,  n = 0, 1, 2 ...
-- and stops with an error before n reaches THREAD_STRIDE.
-- The chats: CHATS of them (1000 by default), a quarter supergroups (negative
-- ids, a sender in `from`), the rest private chats (chat.id == from.id); the
-- updates go round all of them, each thread from its own offset.
-- The same bodies go to the plain route, so both pay the same generation cost.

local BASE = 800000000        -- a realistic 9-digit update_id to start from
local RUN_STRIDE = 1e10       -- ids per run: room for 100 threads
local THREAD_STRIDE = 1e8     -- ids per thread and run (100 million requests)
local DATE = 1767225600       -- 2026-01-01, a fixed message date

-- setup() runs in the main state once per thread before it starts: number them.
local threads = 0
function setup(thread)
    thread:set("tid", threads)
    threads = threads + 1
end

local head, tails, headers, next_id, last_id, chats, n

-- A user, as `from` (and, for a private chat, as the chat).
local function user(i)
    local id = 100000000 + i * 7919
    return id, string.format(
        '{"id":%d,"is_bot":false,"first_name":"User%d","last_name":"Tester","username":"user_%d","language_code":"en"}',
        id, i, i)
end

function init(args)
    local run = tonumber(args[1])
    local secret = args[2]
    chats = tonumber(args[3] or 1000)
    local size = tonumber(args[4] or 1024)
    assert(run and secret and chats and chats > 0 and size, "args: RUN SECRET [CHATS] [SIZE]")
    tid = tid or 0
    next_id = BASE + run * RUN_STRIDE + tid * THREAD_STRIDE
    last_id = next_id + THREAD_STRIDE - 1
    n = tid * 7919 -- where this thread starts in the round of chats
    headers = {
        ["Content-Type"] = "application/json",
        ["Accept-Encoding"] = "gzip, deflate",
        ["X-Telegram-Bot-Api-Secret-Token"] = secret,
    }
    head = ',\n"message":{"message_id":'
    -- What follows the message_id, per chat, the text padded so that the body is
    -- SIZE bytes with this run's first update_id and a 6-digit message_id.
    local fixed = #('{"update_id":' .. string.format("%.0f", next_id) .. head .. "100000")
    tails = {}
    for c = 0, chats - 1 do
        local from_id, from = user(c)
        local chat
        if c % 4 == 0 then
            chat = string.format('{"id":%d,"title":"Group %d","username":"group_%d","type":"supergroup"}',
                -1001000000000 - c, c, c)
        else
            chat = string.format(
                '{"id":%d,"first_name":"User%d","last_name":"Tester","username":"user_%d","type":"private"}',
                from_id, c, c)
        end
        local before = ',"from":' .. from .. ',"chat":' .. chat .. ',"date":' .. DATE .. ',"text":"'
        local after = '"}}'
        local pad = size - fixed - #before - #after
        local words = "hello team, the build is done at 5pm, see you tomorrow "
        local text = string.rep(words, math.ceil(math.max(pad, 0) / #words)):sub(1, math.max(pad, 0))
        tails[c] = before .. text .. after
    end
end

function request()
    local id = next_id
    if id > last_id then
        error("telegram.lua: this thread ran out of unique update_ids; raise THREAD_STRIDE")
    end
    next_id = id + 1
    local c = n % chats
    n = n + 1
    local body = '{"update_id":' .. string.format("%.0f", id) .. head
        .. (100000 + id % 900000) .. tails[c]
    return wrk.format("POST", nil, headers, body)
end
