# One device of tcmu-daemon-many.sh: sh many-one.sh INDEX.
LIB_NOINIT=1 . /mnt/lib.sh
i=$1
sd=$(attach $((100 + i)) "/mnt/img/many$i.json;many$i") || { echo "device $i: attach failed"; exit 1; }
echo $sd >/tmp/many.$i.sd
[ "$(dd if=/dev/$sd bs=1M count=4 2>/dev/null | sha256sum | cut -d' ' -f1)" = "$(cat /mnt/lower4m.sha256)" ] ||
	{ echo "device $i: lower data differs"; exit 1; }
dd if=/dev/urandom of=/tmp/pat.$i bs=64k count=16 2>/dev/null
dd if=/tmp/pat.$i of=/dev/$sd bs=64k seek=$((200 + i * 16)) conv=fsync 2>/dev/null || { echo "device $i: write failed"; exit 1; }
echo "device $i: $sd ok"
