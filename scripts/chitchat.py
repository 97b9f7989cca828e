"""Family chit-chat written for the learning measurement (scripts/eval_learning.py): two halves
of 150 messages each, one to teach the pool and one held out, in English, Chinese and Japanese.
Written for crabbot, from no public corpus; every message is `casual` (cheap tier)."""

from __future__ import annotations

TEACH_BODIES = (
    "ugh debugging all day at work, my brain is mush. what's for dinner",
    "grandpa tried to explain bitcoin to me again at lunch 😂",
    "finally filed my taxes!!! celebrating with ice cream tonight",
    "the python at the zoo was huge, Lily screamed the whole time lol",
    "just saw the doctor, all fine, just a cold. going to nap",
    "Dad is reading the whole car manual out loud again haha",
    "my laptop died in the middle of the meeting, so embarrassing",
    "that documentary about black holes last night was wild",
    "mom's recipe is way better than the one online, don't tell her I checked",
    "I think the cat understands math, she knows when dinner is 5 min late",
    "exam's done!! no idea how I did but who cares, pizza time",
    "the new phone update moved all my apps around, so annoying",
    "Tom built a lego robot that actually walks, so proud of him",
    "lol the spreadsheet of chores you made is very you",
    "we spent the whole evening arguing about which Star Wars is best",
    "the printer is jammed again, I give up, I'll print at the library",
    "my coworker brought homemade kimchi, the whole office smells now",
    "the kids found a snail and named it Professor",
    "stock market dipped and dad said we're all doomed again 🙄",
    "can't believe it's already been a year since we moved here",
    "I accidentally replied-all to the whole company, kill me",
    "the weather app said sunny and now I'm soaked",
    "Max asked why the sky is blue and I had no idea lol",
    "studying for the chem test, send snacks",
    "my step counter says 20k today, my legs are jelly",
    "the landlord finally fixed the heater, we can feel our toes again",
    "watched the chess final with grandpa, he kept shouting at the screen",
    "lol the GPS sent us through a cornfield",
    "so the interview went ok I think? they laughed at my joke at least",
    "I planted basil and it's already taller than the tomatoes",
    "哈哈爸爸又在研究他的新手机，研究了一下午",
    "今天写代码写到头晕，晚上想吃火锅",
    "奶奶说她学会用微信转账了，好厉害",
    "体检结果出来了，一切正常，放心吧",
    "刚看完那个讲宇宙的纪录片，太震撼了",
    "考完试了！！终于解放了",
    "弟弟又在算他的零花钱，说要买游戏机",
    "家里的路由器又罢工了，我重启了三次",
    "今天在公司开了一整天的会，累死",
    "妈妈做的菜比网上的菜谱好吃多了",
    "股票又跌了，爸爸在叹气哈哈",
    "我们搬来这里已经一年了，时间好快",
    "小狗今天学会握手了",
    "天气预报又不准，我被淋成落汤鸡",
    "面试好像还行吧，反正我尽力了",
    "阳台的番茄终于红了",
    "爷爷看球赛看得好激动",
    "导航把我们带到田里去了哈哈",
    "今天走了两万步，腿都断了",
    "房东终于把热水器修好了",
    "パパがまた新しいスマホの設定で一日悩んでた笑",
    "今日は仕事でずっとエラーと戦ってた、疲れた",
    "健康診断の結果、全部問題なかったよ",
    "宇宙のドキュメンタリー見た？すごかった",
    "テスト終わったー！やっと自由",
    "おばあちゃんがLINEのスタンプ覚えたって",
    "株がまた下がったってお父さんが嘆いてる笑",
    "ナビに従ったら畑に着いちゃった",
    "今日二万歩も歩いた、足がもう限界",
    "ベランダのバジルがすごく育ってる",
    "面接たぶん大丈夫だったと思う、たぶん",
    "大家さんがやっと暖房直してくれた",
    "天気予報はずれてびしょ濡れ",
    "犬がお手を覚えたよ！",
    "引っ越してもう一年か、早いね",
)

HELD_OUT_BODIES = (
    "spent all day fixing a bug at work, now I just want noodles",
    "grandma asked me what an app is, I tried my best lol",
    "the accountant finally sent the papers, one less thing to worry about",
    "Emma says her science teacher has a pet lizard, she's obsessed",
    "back from the dentist, no cavities!! treating myself",
    "dad is watching engine repair videos at midnight again",
    "my phone fell in the sink, it survived somehow",
    "the kids want to be astronauts now after the planetarium",
    "tried aunt May's cake recipe, it looks nothing like hers haha",
    "the dog definitely knows what time it is, she's at the door at 6 sharp",
    "finished my last exam!!! sleeping for a week",
    "the smart TV keeps asking to update, I just want to watch my show",
    "Tom made a volcano for school and it exploded all over the kitchen",
    "your color coded calendar made me laugh, so organized",
    "family debate tonight: is a hot dog a sandwich",
    "the router is blinking red again, I'm reading a book instead",
    "someone at work microwaved fish, the horror",
    "the kids adopted a worm from the garden, it's called Steve",
    "dad checked the news and announced the economy is over, again",
    "two years in this house already, feels like yesterday",
    "I sent a voice note to the wrong group chat, mortified",
    "forecast said snow, it's 20 degrees and sunny lol",
    "Lily asked how planes stay up and I said magic",
    "cramming for the history final, pray for me",
    "walked to work today, my feet hate me",
    "the plumber came, the shower works, life is good",
    "watched the tennis with grandpa, he knows every player's name",
    "took a wrong turn and ended up at a goat farm, 10/10",
    "the job call went fine I think, they said they'd get back to me",
    "the strawberries I planted are finally flowering",
    "哈哈妈妈在学用电脑，学了一晚上",
    "今天一直在修程序的bug，现在只想吃面",
    "爷爷说他会用手机拍视频了",
    "看牙医回来了，没有蛀牙，开心",
    "孩子们去了天文馆，现在都想当宇航员",
    "期末考完了！！睡它一个礼拜",
    "妹妹说她们老师养了一只蜥蜴",
    "电视又要更新，我只想看个剧",
    "今天上班有人在微波炉热鱼，太可怕了",
    "试了一下阿姨的蛋糕方子，长得完全不一样哈哈",
    "爸爸看新闻看得直摇头哈哈",
    "在这房子住两年了，好快",
    "语音发错群了，好尴尬",
    "说好的下雪，结果大太阳",
    "背历史背到崩溃，帮我加油",
    "水管修好了，终于能洗澡了",
    "和爷爷一起看网球，他什么都懂",
    "走错路到了一个羊场，风景超好",
    "电话面试应该还行，等通知",
    "草莓开花了！",
    "ママがパソコン教室に通い始めたって",
    "一日中バグ直してた、ラーメン食べたい",
    "歯医者行ってきた、虫歯なし！",
    "子どもたちがプラネタリウム行って宇宙飛行士になりたいって",
    "期末テスト終わった！一週間寝る",
    "テレビがまたアップデートしろって言ってくる笑",
    "おじいちゃんがスマホで動画撮れるようになった",
    "ボイスメッセージ間違えて送っちゃった、恥ずかしい",
    "雪の予報だったのに快晴",
    "水道直った、やっとシャワー浴びれる",
    "道を間違えてヤギ牧場に着いた笑",
    "電話面接たぶん大丈夫、連絡待ち",
    "イチゴの花が咲いたよ",
    "この家に住んで二年か、早いな",
    "おじいちゃんとテニス見てた、選手みんな知ってる",
)


def messages(bodies: tuple[str, ...], count: int = 150) -> list[str]:
    """`count` distinct messages: each body alone, then two bodies in one message (a family
    message often rambles across two things), each pair once."""
    out = list(bodies[:count])
    step = 7
    while len(out) < count:
        for i, body in enumerate(bodies):
            other = bodies[(i + step) % len(bodies)]
            joiner = "，" if not body.isascii() and not other.isascii() else ". also "
            out.append(f"{body}{joiner}{other}")
            if len(out) == count:
                break
        step += 6
    return out


def teach() -> list[str]:
    return messages(TEACH_BODIES)


def held_out() -> list[str]:
    return messages(HELD_OUT_BODIES)
