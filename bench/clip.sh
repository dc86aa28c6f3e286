# Sourced by the bench scripts: the one test clip they all measure on.
#
# make_clip WIDTH HEIGHT SECONDS PATH: carphone.mp4 (a man talking in a car, 176x144, from the
# set-up step) looped and stretched to WIDTH x HEIGHT, 30 fps, H.264 (x264 veryfast crf 20) with
# a 440 Hz tone as AAC audio. Made once: an existing PATH is kept.
#
# A real person matters: the models do their real work and the matte is not trivial. Neither
# cropping nor added noise: MODNet returns an all but empty matte on this upscale as soon as the
# shoulders are cropped off or any grain (even noise=alls=2) is added, and then `human` and `pro`
# would not do their real work. The tone stands in for speech.
make_clip() {
    local width=$1 height=$2 secs=$3 path=$4
    [[ -s "$path" ]] && return
    echo "making $path" >&2
    ffmpeg -nostdin -v error -y -stream_loop -1 -i "$CLEARBG_HOME/fixtures/carphone.mp4" \
        -f lavfi -i "sine=frequency=440:sample_rate=48000" \
        -filter_complex "[0:v]fps=30,scale=$width:$height:flags=bicubic,setsar=1,format=yuv420p[v]" \
        -map "[v]" -map 1:a -t "$secs" \
        -c:v libx264 -preset veryfast -crf 20 -c:a aac -b:a 128k -movflags +faststart "$path.tmp.mp4"
    mv "$path.tmp.mp4" "$path"
}
